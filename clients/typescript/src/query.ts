/**
 * TanStack Query v5 integration for React (`@pgbroadcast/client/query`):
 * everything of `@pgbroadcast/client/query-core` plus the
 * `useBroadcastQueryInvalidation` hook. Its types depend only on
 * `@tanstack/query-core`; at run time it also uses `react` and
 * `@tanstack/react-query`.
 */
import { useContext, useEffect, useRef } from 'react';
import { QueryClientContext } from '@tanstack/react-query';
import type { BroadcastClient } from './client.js';
import { useBroadcastClient } from './react.js';
import { bindQueryInvalidation, type InvalidatingQueryClient, type QueryInvalidationOptions } from './query-core.js';

export * from './query-core.js';

export interface UseBroadcastQueryInvalidationOptions extends QueryInvalidationOptions {
  /** Default true; while false no subscription is held. */
  enabled?: boolean;
  /** Default: the QueryClientProvider's client. */
  queryClient?: InvalidatingQueryClient;
  /** Default: the BroadcastProvider's client, else the `initBroadcast` singleton. */
  client?: BroadcastClient;
}

/** Hook form of `bindQueryInvalidation`. */
export function useBroadcastQueryInvalidation(options: UseBroadcastQueryInvalidationOptions): void {
  const client = useBroadcastClient(options.client);
  const contextQueryClient = useContext(QueryClientContext);
  const queryClient = options.queryClient ?? contextQueryClient;
  if (!queryClient) {
    throw new Error('useBroadcastQueryInvalidation: no QueryClient (wrap in <QueryClientProvider> or pass queryClient)');
  }
  const latest = useRef(options);
  latest.current = options;
  const enabled = options.enabled ?? true;
  const { channel, entityId } = options;
  useEffect(() => {
    if (!enabled) return;
    return bindQueryInvalidation(client, queryClient, {
      channel,
      entityId,
      queryKey: (id) => latest.current.queryKey(id),
      onSignal: (s) => latest.current.onSignal?.(s),
    });
  }, [client, queryClient, channel, entityId, enabled]);
}

