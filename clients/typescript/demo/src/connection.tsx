import { useEffect, useState } from 'react';
import { useBroadcastSync } from '@pgbroadcast/client/react';
import { orderReads } from './net.js';

export type Connection = 'connecting' | 'open' | 'resyncing' | 'closed';

/** How long a resync may wait for its refetch to start before the badge gives up on it. */
const REFETCH_START_MS = 3_000;

/**
 * The connection state for the badge: the socket's state, and `resyncing`
 * from a `resync` signal on `order` until the refetch it caused is through.
 */
export function useConnection(): Connection {
  // When the resync arrived: how many order reads had started, and how many
  // were in flight (a refetch may start before this handler runs).
  const [resync, setResync] = useState<{ since: number; busy: number } | null>(null);
  const { state } = useBroadcastSync({
    channel: 'order',
    onInvalidate: (_entity, signal) => {
      if (signal.resync) setResync({ since: orderReads.started, busy: orderReads.inFlight });
    },
  });
  useEffect(() => {
    if (!resync) return;
    const done = () => orderReads.inFlight === 0 && (orderReads.started > resync.since || resync.busy > 0);
    if (done()) {
      setResync(null);
      return;
    }
    const off = orderReads.subscribe(() => {
      if (done()) setResync(null);
    });
    // No refetch at all (nothing subscribed reads orders): do not stay resyncing.
    const timer = setTimeout(() => {
      if (orderReads.started === resync.since && resync.busy === 0) setResync(null);
    }, REFETCH_START_MS);
    return () => {
      off();
      clearTimeout(timer);
    };
  }, [resync]);
  if (state !== 'open') return state;
  return resync ? 'resyncing' : 'open';
}

export function ConnectionBadge() {
  const connection = useConnection();
  return (
    <span className={`badge badge-${connection}`} data-testid="connection" title="WebSocket connection">
      {connection}
    </span>
  );
}
