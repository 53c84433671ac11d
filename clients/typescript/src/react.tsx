/**
 * React bindings: a provider that owns (or receives) a BroadcastClient and
 * exposes its real connection state, and `useBroadcastSync`.
 */
import { createContext, useContext, useEffect, useRef, useState, useSyncExternalStore, type ReactNode } from 'react';
import {
  BroadcastClient,
  getBroadcastClient,
  topicOf,
  type BroadcastClientOptions,
  type BroadcastSignal,
  type ConnectionState,
  type TopicStatus,
} from './client.js';

const BroadcastContext = createContext<BroadcastClient | null>(null);

export type BroadcastProviderProps =
  | { client: BroadcastClient; options?: undefined; children?: ReactNode }
  | { options: BroadcastClientOptions; client?: undefined; children?: ReactNode };

/**
 * Provides a BroadcastClient to the tree.
 *
 * - `options`: the provider creates the client, connects it on mount and
 *   disconnects it (closing the socket) on unmount.
 * - `client`: an existing client; its lifecycle stays with the caller (the
 *   provider neither connects nor disconnects it).
 */
export function BroadcastProvider(props: BroadcastProviderProps) {
  const external = props.client;
  // Created once per provider instance (options changes after mount are ignored).
  const [owned] = useState<BroadcastClient | null>(() => (external ? null : new BroadcastClient(props.options!)));
  const client = external ?? owned!;
  useEffect(() => {
    if (!owned) return;
    owned.connect();
    return () => owned.disconnect();
  }, [owned]);
  return <BroadcastContext.Provider value={client}>{props.children}</BroadcastContext.Provider>;
}

/** The provider's client, else the `initBroadcast` singleton; throws if neither exists. */
export function useBroadcastClient(explicit?: BroadcastClient): BroadcastClient {
  const fromContext = useContext(BroadcastContext);
  if (explicit) return explicit;
  if (fromContext) return fromContext;
  return getBroadcastClient();
}

export interface BroadcastConnection {
  state: ConnectionState;
  isConnected: boolean;
}

/**
 * What the server renders and hydration starts from. A constant, not the
 * client's live state: the server holds no connection, and the browser's
 * client may already be open when it hydrates, which would not match the
 * server's HTML. After hydration the real state takes over.
 */
const SERVER_STATE: ConnectionState = 'closed';
const getServerState = (): ConnectionState => SERVER_STATE;

/** Live connection state of the provider's (or singleton) client (`closed` on the server and while hydrating). */
export function useBroadcastState(client?: BroadcastClient): BroadcastConnection {
  const c = useBroadcastClient(client);
  const state = useSyncExternalStore((onChange) => c.onStateChange(onChange), () => c.state, getServerState);
  return { state, isConnected: state === 'open' };
}

const getServerTopicStatus = (): TopicStatus | undefined => undefined;

/**
 * The status of one topic (`order`, `order:123`) on the provider's (or
 * singleton) client, to render: `pending` until the server acknowledged it,
 * `live`, `retrying` after a temporary refusal, `forbidden`, `revoked`;
 * `undefined` while no handler holds it, on the server and while hydrating.
 */
export function useTopicStatus(
  channel: string,
  entityId?: string | number | null,
  client?: BroadcastClient,
): TopicStatus | undefined {
  const c = useBroadcastClient(client);
  const topic = topicOf(channel, entityId ?? undefined);
  return useSyncExternalStore(
    (onChange) => c.onTopicStatus((changed) => {
      if (changed === topic) onChange();
    }),
    () => c.topicStatus(topic),
    getServerTopicStatus,
  );
}

export interface UseBroadcastSyncOptions {
  /** Channel, e.g. `order`. */
  channel: string;
  /** Only this entity (plus channel-wide signals and resync). */
  entityId?: string | number | null;
  /** When false, signals go to `onStale` instead of `onInvalidate` (e.g. a form being edited). Default true. */
  enabled?: boolean;
  /** Called for each signal while enabled: the entity id, or undefined for channel-wide signals and resync. */
  onInvalidate: (entityId: string | undefined, signal: BroadcastSignal) => void;
  /** Called for each signal while disabled. */
  onStale?: (signal: BroadcastSignal) => void;
  /** Use this client instead of the provider's / singleton. */
  client?: BroadcastClient;
}

/**
 * Subscribes to a channel (or one entity) for the lifetime of the component.
 * Callbacks may change on every render without resubscribing.
 */
export function useBroadcastSync(options: UseBroadcastSyncOptions): BroadcastConnection {
  const client = useBroadcastClient(options.client);
  const latest = useRef(options);
  latest.current = options;
  const topic = topicOf(options.channel, options.entityId);
  useEffect(
    () =>
      client.subscribe(topic, (signal) => {
        const o = latest.current;
        if (o.enabled ?? true) o.onInvalidate(signal.resync ? undefined : signal.entityId, signal);
        else o.onStale?.(signal);
      }),
    [client, topic],
  );
  return useBroadcastState(client);
}
