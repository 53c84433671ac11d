/**
 * TanStack Query v5 integration (`@pgbroadcast/client/query`): invalidate
 * query keys on signals. Its types depend only on `@tanstack/query-core`;
 * at runtime it also uses `react` and `@tanstack/react-query` (for the hook).
 */
import { useContext, useEffect, useRef } from 'react';
import { QueryClientContext, hashKey } from '@tanstack/react-query';
import type { InvalidateQueryFilters, QueryClient, QueryKey } from '@tanstack/query-core';
import { topicOf, type BroadcastClient, type BroadcastSignal } from './client.js';
import { useBroadcastClient } from './react.js';
import { gapTracker } from './gap.js';

// ------------------------------------------------------------ TanStack Query

/**
 * What a signal invalidates: a query key (`["orders", id]`, matched as a
 * prefix like TanStack's `{ queryKey }`) or TanStack's own
 * `InvalidateQueryFilters` (`{ queryKey, exact, type, predicate, refetchType, ... }`).
 */
export type InvalidationTarget = QueryKey | InvalidateQueryFilters;

/**
 * The part of a QueryClient used here. `isFetching` is optional (a full
 * QueryClient has it): without it a signal that arrives while someone else's
 * fetch of the query is already running cannot be detected.
 */
export type InvalidatingQueryClient = Pick<QueryClient, 'invalidateQueries'> & Partial<Pick<QueryClient, 'isFetching'>>;

export interface QueryInvalidationOptions {
  channel: string;
  /** Only signals for this entity (plus channel-wide ones and resync). */
  entityId?: string | number | null;
  /**
   * Keys (or `InvalidateQueryFilters`) to invalidate for a signal: called with
   * the entity id, or with undefined for channel-wide signals and resync
   * (return the list / "all" keys of the channel then). Example:
   * `(id) => id ? [["orders", id], ["orders", "list"]] : [["orders"]]`, or
   * `(id) => [{ queryKey: ["orders"], refetchType: "all" }]`.
   */
  queryKey: (entityId?: string) => InvalidationTarget[];
  /** Called after the invalidations were issued. */
  onSignal?: (signal: BroadcastSignal) => void;
}

/** Keys (or filters) a signal invalidates (exported for tests and custom integrations). */
export function keysForSignal<T extends InvalidationTarget>(signal: BroadcastSignal, queryKey: (entityId?: string) => T[]): T[] {
  return queryKey(signal.resync ? undefined : signal.entityId);
}

/** A key as TanStack filters: `key` → `{ queryKey: key }`; filters unchanged. */
export function toInvalidateFilters(target: InvalidationTarget): InvalidateQueryFilters {
  return Array.isArray(target) ? { queryKey: target } : (target as InvalidateQueryFilters);
}

// Predicates cannot be hashed; equal filters with the same predicate function coalesce.
const predicateIds = new WeakMap<object, number>();
let nextPredicateId = 0;

/** Identity of a filter for coalescing: the hash TanStack uses for keys, plus the predicate's identity. */
function filtersId(filters: InvalidateQueryFilters): string {
  const { predicate, ...rest } = filters;
  let id = hashKey([rest]);
  if (predicate) {
    let n = predicateIds.get(predicate);
    if (n === undefined) {
      n = ++nextPredicateId;
      predicateIds.set(predicate, n);
    }
    id += `#${n}`;
  }
  return id;
}

/**
 * On every signal of `channel`, invalidates each key (or filters) of
 * `queryKey(entityId)`. Returns the unsubscribe function.
 *
 * Bursts must not starve the UI: TanStack's default `cancelRefetch: true`
 * would cancel the fetch in flight on every signal, so with signals faster
 * than the fetch no fetch ever finished. Here the invalidation passes
 * `cancelRefetch: false`, and per key at most one invalidation runs: signals
 * arriving while it runs (the same tick included) are coalesced into one
 * more invalidation after it, because the running fetch may have read the
 * data before their writes.
 *
 * When the topic becomes `live` (the server's `subscribed`: first, and again
 * after every reconnect), the keys of `queryKey(entityId)` are invalidated
 * once the same way: a query that fetched before the subscription was live
 * would otherwise miss writes committed in between until the next signal.
 * A `resync` and a `live` in the same tick (a reconnect's resume answered
 * with a resync) invalidate a key once, not twice.
 */
export function bindQueryInvalidation(
  client: BroadcastClient,
  queryClient: InvalidatingQueryClient,
  options: QueryInvalidationOptions,
): () => void {
  const { channel, entityId, queryKey, onSignal } = options;
  let active = true;
  const running = new Map<string, { filters: InvalidateQueryFilters; again: boolean }>();
  const run = async (id: string, entry: { filters: InvalidateQueryFilters; again: boolean }): Promise<void> => {
    try {
      do {
        entry.again = false;
        // With cancelRefetch: false the invalidation joins a fetch already in
        // flight (someone else's) instead of restarting it; that fetch may
        // predate this write, so one more round follows it.
        const joined = (queryClient.isFetching?.(entry.filters) ?? 0) > 0;
        await queryClient.invalidateQueries(entry.filters, { cancelRefetch: false });
        if (joined) entry.again = true;
      } while (entry.again && active);
    } catch {
      // invalidateQueries does not throw by default (throwOnError: false); a
      // custom client that does must not leave this key blocked.
    } finally {
      running.delete(id);
    }
  };
  const gaps = gapTracker<string>();
  /** `gap`: a `live` or a `resync`, which a same-tick other one already covers. */
  const invalidate = (targets: InvalidationTarget[], gap: boolean): void => {
    for (const target of targets) {
      const filters = toInvalidateFilters(target);
      const id = filtersId(filters);
      if (gap && !gaps.claim(id)) continue;
      const entry = running.get(id);
      if (entry) {
        entry.filters = filters;
        entry.again = true;
        continue;
      }
      const fresh = { filters, again: false };
      running.set(id, fresh);
      // The first invalidation is issued synchronously (run's body up to its first await).
      void run(id, fresh);
    }
  };
  const topic = topicOf(channel, entityId);
  const off = client.subscribe(topic, (signal) => {
    invalidate(keysForSignal(signal, queryKey), signal.resync);
    onSignal?.(signal);
  });
  const offStatus = client.onTopicStatus((t, status) => {
    if (t !== topic || status !== 'live' || !active) return;
    invalidate(queryKey(entityId === undefined || entityId === null ? undefined : String(entityId)), true);
  });
  return () => {
    active = false;
    offStatus();
    off();
  };
}

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

