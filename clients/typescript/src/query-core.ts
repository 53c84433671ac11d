/**
 * TanStack Query v5 integration for any framework
 * (`@pgbroadcast/client/query-core`): invalidate query keys on signals.
 * Nothing to install at run time; its types come from
 * `@tanstack/query-core`, which every TanStack Query adapter (React, Vue,
 * Solid, Svelte, Angular) brings. React apps use `@pgbroadcast/client/query`,
 * which adds the hook.
 */
import type { InvalidateQueryFilters, QueryClient, QueryKey } from '@tanstack/query-core';
import { topicOf, type BroadcastClient, type BroadcastSignal } from './client.js';
import { gapTracker, refetchCoalescer } from './gap.js';

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

/**
 * A key's hash as TanStack computes it (`hashKey`): JSON with the keys of
 * plain objects sorted, so `{ a, b }` and `{ b, a }` are the same key.
 */
function hashKey(key: readonly unknown[]): string {
  return JSON.stringify(key, (_, value: unknown) =>
    isPlainObject(value)
      ? Object.keys(value)
          .sort()
          .reduce<Record<string, unknown>>((sorted, k) => {
            sorted[k] = value[k];
            return sorted;
          }, {})
      : value,
  );
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (Object.prototype.toString.call(value) !== '[object Object]') return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === null || proto === Object.prototype;
}

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
 * Signals are coalesced, per key: the invalidations run at the next frame
 * (`requestAnimationFrame`, else a 16 ms timer), so a burst of signals within
 * a frame invalidates once; signals with a txid an invalidation already
 * covers (it started after the first signal of that transaction, which is
 * sent at commit) invalidate nothing more, so the several signals of one
 * transaction (`updated` + `status_changed`) cost one refetch.
 *
 * Bursts must not starve the UI: TanStack's default `cancelRefetch: true`
 * would cancel the fetch in flight on every signal, so with signals faster
 * than the fetch no fetch ever finished. Here the invalidation passes
 * `cancelRefetch: false`, and per key at most one invalidation runs: signals
 * with a new txid (or none) arriving while it runs are coalesced into one
 * more invalidation right after it, because the running fetch may have read
 * the data before their writes.
 *
 * When the topic becomes `live` (the server's `subscribed`: first, and again
 * after every reconnect), the keys of `queryKey(entityId)` are invalidated
 * once the same way: a query that fetched before the subscription was live
 * would otherwise miss writes committed in between until the next signal.
 * These (and a `resync`) invalidate at once, not at the next frame, whatever
 * the txids. A `resync` and a `live` in the same tick (a reconnect's resume
 * answered with a resync) invalidate a key once, not twice.
 */
export function bindQueryInvalidation(
  client: BroadcastClient,
  queryClient: InvalidatingQueryClient,
  options: QueryInvalidationOptions,
): () => void {
  const { channel, entityId, queryKey, onSignal } = options;
  const rounds = refetchCoalescer<string, InvalidateQueryFilters>((_id, filters) => {
    // With cancelRefetch: false the invalidation joins a fetch already in
    // flight (someone else's) instead of restarting it; that fetch may
    // predate the signals, so one more round follows it.
    const joined = (queryClient.isFetching?.(filters) ?? 0) > 0;
    // invalidateQueries does not throw by default (throwOnError: false); a
    // custom client that does must not leave this key blocked (the coalescer
    // catches it).
    return { joined, done: queryClient.invalidateQueries(filters, { cancelRefetch: false }) };
  });
  const gaps = gapTracker<string>();
  /** `gap`: a `live` or a `resync` (at once, whatever the txids), which a same-tick other one already covers. */
  const invalidate = (targets: InvalidationTarget[], gap: boolean, txid?: number): void => {
    for (const target of targets) {
      const filters = toInvalidateFilters(target);
      const id = filtersId(filters);
      if (gap) {
        if (gaps.claim(id)) rounds.now(id, filters);
      } else {
        rounds.signal(id, txid, filters);
      }
    }
  };
  const topic = topicOf(channel, entityId);
  const off = client.subscribe(topic, (signal) => {
    invalidate(keysForSignal(signal, queryKey), signal.resync, signal.txid);
    onSignal?.(signal);
  });
  const offStatus = client.onTopicStatus((t, status) => {
    if (t !== topic || status !== 'live') return;
    invalidate(queryKey(entityId === undefined || entityId === null ? undefined : String(entityId)), true);
  });
  return () => {
    rounds.stop();
    offStatus();
    off();
  };
}
