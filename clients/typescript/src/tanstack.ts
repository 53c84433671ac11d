/**
 * TanStack integrations:
 * - TanStack Query v5: invalidate query keys on signals;
 * - TanStack DB query collections (`@tanstack/query-db-collection`): refetch;
 * - TanStack DB electric collections (`@tanstack/electric-db-collection`):
 *   `useLiveOrFrozen` for forms that must not change under the user's hands.
 */
import { useCallback, useContext, useEffect, useRef, useState } from 'react';
import { QueryClientContext } from '@tanstack/react-query';
import type { QueryClient, QueryKey } from '@tanstack/query-core';
import type { QueryCollectionUtils } from '@tanstack/query-db-collection';
import type { AwaitTxIdFn } from '@tanstack/electric-db-collection';
import { BroadcastClient, topicOf, type BroadcastClientOptions, type BroadcastSignal } from './client.js';
import { useBroadcastClient } from './react.js';

// ------------------------------------------------------------ TanStack Query

export interface QueryInvalidationOptions {
  channel: string;
  /** Only signals for this entity (plus channel-wide ones and resync). */
  entityId?: string | number | null;
  /**
   * Keys to invalidate for a signal: called with the entity id, or with
   * undefined for channel-wide signals and resync (return the list / "all"
   * keys of the channel then). Example:
   * `(id) => id ? [["orders", id], ["orders", "list"]] : [["orders"]]`.
   */
  queryKey: (entityId?: string) => QueryKey[];
  /** Called after the invalidations were issued. */
  onSignal?: (signal: BroadcastSignal) => void;
}

/** Keys a signal invalidates (exported for tests and custom integrations). */
export function keysForSignal(signal: BroadcastSignal, queryKey: (entityId?: string) => QueryKey[]): QueryKey[] {
  return queryKey(signal.resync ? undefined : signal.entityId);
}

/**
 * On every signal of `channel`, calls `queryClient.invalidateQueries({ queryKey })`
 * for each key of `queryKey(entityId)`. Returns the unsubscribe function.
 */
export function bindQueryInvalidation(
  client: BroadcastClient,
  queryClient: Pick<QueryClient, 'invalidateQueries'>,
  options: QueryInvalidationOptions,
): () => void {
  const { channel, entityId, queryKey, onSignal } = options;
  return client.subscribe(topicOf(channel, entityId), (signal) => {
    for (const key of keysForSignal(signal, queryKey)) {
      void queryClient.invalidateQueries({ queryKey: key });
    }
    onSignal?.(signal);
  });
}

export interface UseBroadcastQueryInvalidationOptions extends QueryInvalidationOptions {
  /** Default true; while false no subscription is held. */
  enabled?: boolean;
  /** Default: the QueryClientProvider's client. */
  queryClient?: Pick<QueryClient, 'invalidateQueries'>;
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

// ------------------------------------------------ TanStack DB query collection

/** The part of a query collection this binding uses (`collection.utils.refetch()`). */
export interface RefetchableCollection {
  utils: Pick<QueryCollectionUtils, 'refetch'> | { refetch: () => Promise<unknown> };
}

/**
 * Refetches a query collection on every signal of `channel`. Signals arriving
 * while a refetch runs are coalesced into one more refetch after it.
 */
export function bindQueryCollection(
  client: BroadcastClient,
  collection: RefetchableCollection,
  options: { channel: string; entityId?: string | number | null; onError?: (error: unknown) => void },
): () => void {
  let running = false;
  let again = false;
  let active = true;
  const run = async (): Promise<void> => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        try {
          await collection.utils.refetch();
        } catch (error) {
          options.onError?.(error);
        }
      } while (again && active);
    } finally {
      running = false;
    }
  };
  const off = client.subscribe(topicOf(options.channel, options.entityId), () => {
    void run();
  });
  return () => {
    active = false;
    off();
  };
}

/** Hook form of `bindQueryCollection`. */
export function useBroadcastQueryCollection(
  collection: RefetchableCollection,
  options: { channel: string; entityId?: string | number | null; enabled?: boolean; client?: BroadcastClient },
): void {
  const client = useBroadcastClient(options.client);
  const enabled = options.enabled ?? true;
  useEffect(() => {
    if (!enabled) return;
    return bindQueryCollection(client, collection, { channel: options.channel, entityId: options.entityId });
  }, [client, collection, options.channel, options.entityId, enabled]);
}

// ---------------------------------------------- live or frozen (electric etc.)

/**
 * A generic data source: anything with a current value, a change
 * subscription and optionally `awaitTxId` (an electric collection fits via
 * `collectionSource`).
 */
export interface LiveDataSource<T> {
  getSnapshot(): T;
  subscribe(onChange: () => void): () => void;
  awaitTxId?: (txid: number, timeoutMs?: number) => Promise<boolean>;
}

/**
 * The part of a TanStack DB `Collection` used here (a real `Collection` from
 * `@tanstack/db`, e.g. `createCollection(electricCollectionOptions(...))`,
 * satisfies it; `utils.awaitTxId` is the electric collection's).
 */
export interface CollectionLike<T, K extends string | number = string | number> {
  get(key: K): T | undefined;
  readonly toArray: T[];
  subscribeChanges(callback: (changes: Array<{ key: string | number }>) => void, options?: object): { unsubscribe(): void };
  utils?: { awaitTxId?: AwaitTxIdFn } | Record<string, unknown>;
}

function isCollectionLike(x: unknown): x is CollectionLike<unknown> {
  return !!x && typeof (x as CollectionLike<unknown>).subscribeChanges === 'function';
}

/**
 * Adapts a collection to a LiveDataSource: with `key`, the row under that key
 * (changes to other rows are ignored); without, `collection.toArray`.
 */
export function collectionSource<T, K extends string | number>(
  collection: CollectionLike<T, K>,
  key: K,
): LiveDataSource<T | undefined>;
export function collectionSource<T, K extends string | number>(collection: CollectionLike<T, K>): LiveDataSource<T[]>;
export function collectionSource<T, K extends string | number>(
  collection: CollectionLike<T, K>,
  key?: K,
): LiveDataSource<T | undefined | T[]> {
  const awaitTxId = (collection.utils as { awaitTxId?: AwaitTxIdFn } | undefined)?.awaitTxId;
  return {
    getSnapshot: () => (key === undefined ? collection.toArray : collection.get(key)),
    subscribe: (onChange) => {
      const sub = collection.subscribeChanges((changes) => {
        if (key === undefined || changes.some((c) => c.key === key)) onChange();
      });
      return () => sub.unsubscribe();
    },
    ...(awaitTxId ? { awaitTxId: (txid: number, timeoutMs?: number) => awaitTxId(txid, timeoutMs) } : {}),
  };
}

export interface UseLiveOrFrozenOptions {
  channel: string;
  /** The entity the data is about: only its signals (and channel-wide ones, resync) mark it stale. */
  entityId?: string | number | null;
  /**
   * Key in the collection when a collection is passed (defaults to `entityId`;
   * pass the number for numeric keys).
   */
  key?: string | number;
  /** true: always the current data. false: the data the view started from, frozen. */
  live: boolean;
  /** Default: the BroadcastProvider's client, else the singleton. */
  client?: BroadcastClient;
  /** How long `awaitTxId` waits without an `awaitTxId` on the source (default 30 s). */
  awaitTimeoutMs?: number;
}

export interface LiveOrFrozen<T> {
  /** Current data (live) or the frozen data (not live). */
  data: T;
  /** Not live, and a signal for this data arrived or the data changed since it was frozen. */
  isStale: boolean;
  /** The last signal that made the data stale. */
  staleSignal: BroadcastSignal | undefined;
  /** Takes the current data and clears `isStale`. */
  refresh: () => void;
  /**
   * Waits until transaction `txid` (of the user's own write) has arrived
   * (the source's `awaitTxId`, i.e. Electric's, when present; else the
   * broadcast signal with that txid), then takes the current data and clears
   * `isStale` (unless someone else's signal arrived meanwhile). Signals with
   * this txid never mark the data stale.
   */
  awaitTxId: (txid: number, timeoutMs?: number) => Promise<boolean>;
}

/**
 * For edit forms: `live: true` shows current data; `live: false` keeps the
 * data the form started from and says when it went stale.
 */
export function useLiveOrFrozen<T, K extends string | number>(
  source: CollectionLike<T, K>,
  options: UseLiveOrFrozenOptions & { key: K },
): LiveOrFrozen<T | undefined>;
export function useLiveOrFrozen<T, K extends string | number>(
  source: CollectionLike<T, K>,
  options: UseLiveOrFrozenOptions,
): LiveOrFrozen<T[] | T | undefined>;
export function useLiveOrFrozen<T>(source: LiveDataSource<T>, options: UseLiveOrFrozenOptions): LiveOrFrozen<T>;
export function useLiveOrFrozen(
  input: LiveDataSource<unknown> | CollectionLike<unknown>,
  options: UseLiveOrFrozenOptions,
): LiveOrFrozen<unknown> {
  const client = useBroadcastClient(options.client);
  const key = options.key ?? (options.entityId ?? undefined);
  // Adapt a collection once per (collection, key).
  const sourceRef = useRef<{ input: unknown; key: unknown; source: LiveDataSource<unknown> } | null>(null);
  if (!sourceRef.current || sourceRef.current.input !== input || sourceRef.current.key !== key) {
    const source = isCollectionLike(input)
      ? key === undefined
        ? collectionSource(input)
        : collectionSource(input as CollectionLike<unknown, string | number>, key)
      : (input as LiveDataSource<unknown>);
    sourceRef.current = { input, key, source };
  }
  const source = sourceRef.current.source;

  const [current, setCurrent] = useState<unknown>(() => source.getSnapshot());
  const [frozen, setFrozen] = useState<unknown>(() => source.getSnapshot());
  const [stale, setStale] = useState<{ isStale: boolean; signal?: BroadcastSignal }>({ isStale: false });

  const live = options.live;
  const liveRef = useRef(live);
  liveRef.current = live;
  const frozenRef = useRef(frozen);
  frozenRef.current = frozen;
  const ownTxids = useRef(new Set<number>());
  const seenTxids = useRef(new Map<number, Array<() => void>>());
  const foreignSince = useRef(0);

  // Follow the source.
  useEffect(() => {
    const read = () => {
      const next = source.getSnapshot();
      setCurrent(() => next);
      if (liveRef.current) {
        setFrozen(() => next);
      } else if (frozenRef.current === undefined || frozenRef.current === null) {
        // Nothing was shown yet (still loading): the first data is the starting point.
        setFrozen(() => next);
        frozenRef.current = next;
      } else if (!Object.is(next, frozenRef.current)) {
        setStale((s) => (s.isStale ? s : { isStale: true, signal: s.signal }));
      }
    };
    read();
    return source.subscribe(read);
  }, [source]);

  // Going live shows the current data; going frozen freezes what is shown.
  useEffect(() => {
    if (live) {
      setFrozen(() => source.getSnapshot());
      setStale({ isStale: false });
    }
  }, [live, source]);

  // Signals.
  const topic = topicOf(options.channel, options.entityId);
  useEffect(
    () =>
      client.subscribe(topic, (signal) => {
        if (signal.txid !== undefined) {
          const waiters = seenTxids.current.get(signal.txid);
          if (waiters) for (const w of waiters) w();
          seenTxids.current.set(signal.txid, []);
          if (ownTxids.current.has(signal.txid)) return;
        }
        foreignSince.current += 1;
        if (!liveRef.current) setStale({ isStale: true, signal });
      }),
    [client, topic],
  );

  const refresh = useCallback(() => {
    const next = source.getSnapshot();
    setCurrent(() => next);
    setFrozen(() => next);
    frozenRef.current = next;
    setStale({ isStale: false });
  }, [source]);

  const awaitTimeoutMs = options.awaitTimeoutMs ?? 30_000;
  const awaitTxId = useCallback(
    async (txid: number, timeoutMs?: number): Promise<boolean> => {
      ownTxids.current.add(txid);
      const foreignAtStart = foreignSince.current;
      let arrived: boolean;
      if (source.awaitTxId) {
        arrived = await source.awaitTxId(txid, timeoutMs);
      } else if (seenTxids.current.has(txid)) {
        arrived = true;
      } else {
        arrived = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), timeoutMs ?? awaitTimeoutMs);
          const list = seenTxids.current.get(txid) ?? [];
          list.push(() => {
            clearTimeout(timer);
            resolve(true);
          });
          seenTxids.current.set(txid, list);
        });
      }
      if (arrived) {
        const next = source.getSnapshot();
        setCurrent(() => next);
        setFrozen(() => next);
        frozenRef.current = next;
        if (foreignSince.current === foreignAtStart) setStale({ isStale: false });
      }
      return arrived;
    },
    [source, awaitTimeoutMs],
  );

  return {
    data: live ? current : frozen,
    isStale: !live && stale.isStale,
    staleSignal: !live && stale.isStale ? stale.signal : undefined,
    refresh,
    awaitTxId,
  };
}

// ---------------------------------------------------------------- configure

export interface ConfigureSyncOptions {
  /** Electric's shape endpoint, e.g. `http://localhost:3000/v1/shape`. */
  electricUrl: string;
  /** pgbroadcast's WebSocket, e.g. `ws://localhost:8080/ws/broadcast`. */
  broadcastUrl: string;
  getToken?: BroadcastClientOptions['getToken'];
  WebSocket?: BroadcastClientOptions['WebSocket'];
  /** Connect the broadcast client now (default true). */
  connect?: boolean;
}

export interface SyncConfig {
  broadcast: BroadcastClient;
  /** Shape options for `electricCollectionOptions({ shapeOptions: electricShapeOptions("orders"), ... })`. */
  electricShapeOptions: (table: string) => { url: string; params: { table: string } };
}

/** One place for both URLs: a connected BroadcastClient and Electric shape options. */
export function configureSync(options: ConfigureSyncOptions): SyncConfig {
  const broadcast = new BroadcastClient({
    url: options.broadcastUrl,
    ...(options.getToken ? { getToken: options.getToken } : {}),
    ...(options.WebSocket ? { WebSocket: options.WebSocket } : {}),
  });
  if (options.connect ?? true) broadcast.connect();
  return {
    broadcast,
    electricShapeOptions: (table: string) => ({ url: options.electricUrl, params: { table } }),
  };
}
