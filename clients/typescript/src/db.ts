/**
 * TanStack DB integrations (`@pgbroadcast/client/db`):
 * - TanStack DB query collections (`@tanstack/query-db-collection`): refetch;
 * - TanStack DB electric collections (`@tanstack/electric-db-collection`):
 *   `useLiveOrFrozen` for forms that must not change under the user's hands;
 * - `configureSync`: one place for the broadcast and Electric URLs.
 */
import { useEffect, useLayoutEffect, useMemo, useRef, useSyncExternalStore } from 'react';
import type { QueryCollectionUtils } from '@tanstack/query-db-collection';
import {
  BroadcastClient,
  createBroadcastClient,
  topicOf,
  type BroadcastClientOptions,
  type BroadcastSignal,
} from './client.js';
import { useBroadcastClient } from './react.js';
import { gapTracker, refetchCoalescer } from './gap.js';

/**
 * An electric collection's `utils.awaitTxId` (`AwaitTxIdFn` of
 * `@tanstack/electric-db-collection`), stated here so that this entry's types
 * do not need that package installed (nor its pinned `@tanstack/db`).
 */
type AwaitTxIdFn = (txId: number, timeout?: number) => Promise<boolean>;

// ------------------------------------------------ TanStack DB query collection

/** The part of a query collection this binding uses (`collection.utils.refetch()`). */
export interface RefetchableCollection {
  utils: Pick<QueryCollectionUtils, 'refetch'> | { refetch: () => Promise<unknown> };
}

/**
 * Refetches a query collection on signals of `channel`, coalesced like
 * `bindQueryInvalidation`'s: at the next frame (`requestAnimationFrame`, else
 * a 16 ms timer), once per burst; not again for a txid a refetch started
 * after already covers (the several signals of one transaction); signals with
 * a new txid arriving while a refetch runs make one more refetch after it.
 * When the topic becomes `live` (first, and after every reconnect) it
 * refetches at once too: writes between the collection's load and the subscription going live
 * were not signalled (a `resync` in the same tick shares that refetch).
 */
export function bindQueryCollection(
  client: BroadcastClient,
  collection: RefetchableCollection,
  options: { channel: string; entityId?: string | number | null; onError?: (error: unknown) => void },
): () => void {
  const rounds = refetchCoalescer<true>(
    // Called synchronously; a throw becomes the round's rejection (reported to onError).
    () => ({ joined: false, done: (async () => collection.utils.refetch())() }),
    (error) => options.onError?.(error),
  );
  const gaps = gapTracker<true>();
  const topic = topicOf(options.channel, options.entityId);
  const off = client.subscribe(topic, (signal) => {
    if (!signal.resync) rounds.signal(true, signal.txid, undefined);
    else if (gaps.claim(true)) rounds.now(true, undefined);
  });
  const offStatus = client.onTopicStatus((t, status) => {
    if (t !== topic || status !== 'live' || !gaps.claim(true)) return;
    rounds.now(true, undefined);
  });
  return () => {
    rounds.stop();
    offStatus();
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
  // `object`: TanStack DB's utils types (e.g. `QueryCollectionUtils` since
  // @tanstack/db 0.10) are interfaces without an index signature.
  utils?: { awaitTxId?: AwaitTxIdFn } | object;
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

/** How many txids (own, and seen in signals) are remembered; older ones are forgotten. */
export const TXID_MEMORY = 1024;

/** An insertion-ordered set that forgets its oldest entries beyond `limit` (bounded memory over a long session). */
class RecentSet {
  private readonly items = new Set<number>();
  constructor(private readonly limit: number) {}
  has(x: number): boolean {
    return this.items.has(x);
  }
  clear(): void {
    this.items.clear();
  }
  add(x: number): void {
    this.items.delete(x);
    this.items.add(x);
    if (this.items.size > this.limit) this.items.delete(this.items.values().next().value as number);
  }
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  if (typeof x !== 'object' || x === null) return false;
  const proto = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

/**
 * Equal arrays (element-wise) and plain objects (key-wise): sources such as
 * `collection.toArray` return a new array on every read, which is not a change.
 */
function shallowEqual(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((x, i) => Object.is(x, b[i]));
  }
  if (isPlainObject(a) && isPlainObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && Object.is(a[k], b[k]));
  }
  return false;
}

interface LiveOrFrozenState {
  current: unknown;
  frozen: unknown;
  isStale: boolean;
  staleSignal: BroadcastSignal | undefined;
}

/**
 * The state behind `useLiveOrFrozen`, as an external store for
 * `useSyncExternalStore`: one per (source, client, topic), so a new entity
 * starts from its own data in the same render. Subscribed while mounted; the
 * last unsubscribe (unmount) releases the source, the topic and any pending
 * `awaitTxId` (its timer included).
 */
class LiveOrFrozenStore {
  private state: LiveOrFrozenState;
  /** What the server rendered: constant, so hydration does not mismatch. */
  private readonly serverState: LiveOrFrozenState;
  private readonly listeners = new Set<() => void>();
  private teardown: (() => void) | null = null;
  private readonly own = new RecentSet(TXID_MEMORY);
  private readonly seen = new RecentSet(TXID_MEMORY);
  /** txid → resolvers of `awaitTxId` calls waiting for its signal. */
  private readonly waiters = new Map<number, Set<(arrived: boolean) => void>>();
  /** Pending `awaitTxId` calls, resolved false on unmount. */
  private readonly pending = new Set<() => void>();
  /** Count of foreign signals (not own txids), to tell whether one came during an `awaitTxId`. */
  private foreign = 0;
  /** The epoch of the last signal that named one. */
  private epoch: string | undefined;

  constructor(
    private readonly source: LiveDataSource<unknown>,
    private readonly client: BroadcastClient,
    private readonly topic: string,
    public live: boolean,
    public awaitTimeoutMs: number,
  ) {
    const first = source.getSnapshot();
    this.state = { current: first, frozen: first, isStale: false, staleSignal: undefined };
    this.serverState = this.state;
  }

  subscribe = (onChange: () => void): (() => void) => {
    this.listeners.add(onChange);
    if (!this.teardown) {
      const offSource = this.source.subscribe(() => {
        if (this.read()) this.emit();
      });
      const offSignals = this.client.subscribe(this.topic, (signal) => this.onSignal(signal));
      this.teardown = () => {
        offSource();
        offSignals();
      };
    }
    return () => {
      this.listeners.delete(onChange);
      if (this.listeners.size > 0 || !this.teardown) return;
      this.teardown();
      this.teardown = null;
      for (const cancel of [...this.pending]) cancel();
    };
  };

  /** Reads the source (cached: equal data keeps the same state object, as useSyncExternalStore requires). */
  getSnapshot = (): LiveOrFrozenState => {
    this.read();
    return this.state;
  };

  getServerSnapshot = (): LiveOrFrozenState => this.serverState;

  /** Takes the source's data into `current`; returns whether the state changed. */
  private read(): boolean {
    const next = this.source.getSnapshot();
    const s = this.state;
    if (shallowEqual(next, s.current)) return false;
    if (this.live || s.frozen === undefined || s.frozen === null) {
      // Live: the frozen data follows (going frozen freezes what was shown).
      // Nothing shown yet (still loading): the first data is the starting point.
      this.state = { ...s, current: next, frozen: next };
    } else {
      this.state = { ...s, current: next, isStale: s.isStale || !shallowEqual(next, s.frozen) };
    }
    return true;
  }

  private emit(): void {
    for (const l of [...this.listeners]) l();
  }

  private onSignal(signal: BroadcastSignal): void {
    if (signal.epoch !== undefined) {
      // A new epoch may be a server on another database, whose txids start
      // over: a txid seen before it says nothing about a write after it.
      if (this.epoch !== undefined && signal.epoch !== this.epoch) this.seen.clear();
      this.epoch = signal.epoch;
    }
    if (signal.txid !== undefined) {
      this.seen.add(signal.txid);
      const waiting = this.waiters.get(signal.txid);
      if (waiting) for (const resolve of [...waiting]) resolve(true);
      if (this.own.has(signal.txid)) return;
    }
    this.foreign += 1;
    if (this.live) return;
    this.state = { ...this.state, isStale: true, staleSignal: signal };
    this.emit();
  }

  /** Takes the current data as the frozen data and clears staleness. */
  private take(clearStale: boolean): void {
    this.read();
    this.state = clearStale
      ? { ...this.state, frozen: this.state.current, isStale: false, staleSignal: undefined }
      : { ...this.state, frozen: this.state.current };
    this.emit();
  }

  setLive(live: boolean): void {
    if (live === this.live) return;
    this.live = live;
    // Going live shows the current data; going frozen freezes what was shown (the current data).
    this.take(true);
  }

  refresh = (): void => this.take(true);

  awaitTxId = async (txid: number, timeoutMs?: number): Promise<boolean> => {
    this.own.add(txid);
    const foreignAtStart = this.foreign;
    let arrived: boolean;
    const sourceAwait = this.source.awaitTxId;
    if (sourceAwait) {
      arrived = await new Promise<boolean>((resolve) => {
        const cancel = () => resolve(false);
        this.pending.add(cancel);
        // Electric's awaitTxId rejects on timeout: that is the documented `false`, not an error.
        sourceAwait(txid, timeoutMs).then(
          (ok) => {
            this.pending.delete(cancel);
            resolve(ok !== false);
          },
          () => {
            this.pending.delete(cancel);
            resolve(false);
          },
        );
      });
    } else if (this.seen.has(txid)) {
      arrived = true;
    } else if (!this.teardown) {
      // Not mounted: no signal can arrive, and no timer may outlive the component.
      arrived = false;
    } else {
      arrived = await new Promise<boolean>((resolve) => {
        let list = this.waiters.get(txid);
        if (!list) this.waiters.set(txid, (list = new Set()));
        const waiting = list;
        const finish = (ok: boolean) => {
          clearTimeout(timer);
          waiting.delete(finish);
          if (waiting.size === 0) this.waiters.delete(txid);
          this.pending.delete(cancel);
          resolve(ok);
        };
        const cancel = () => finish(false);
        const timer = setTimeout(cancel, timeoutMs ?? this.awaitTimeoutMs);
        waiting.add(finish);
        this.pending.add(cancel);
      });
    }
    if (arrived && this.teardown) this.take(this.foreign === foreignAtStart);
    return arrived;
  };
}

/** A source that delegates to whatever `ref.current` is at the time of each call. */
function latestSource(ref: { current: LiveDataSource<unknown> }): LiveDataSource<unknown> {
  return {
    getSnapshot: () => ref.current.getSnapshot(),
    subscribe: (onChange) => ref.current.subscribe(onChange),
    get awaitTxId() {
      const s = ref.current;
      return s.awaitTxId ? (txid: number, timeoutMs?: number) => s.awaitTxId!(txid, timeoutMs) : undefined;
    },
  };
}

// useLayoutEffect warns during server rendering in React 18; effects do not run there anyway.
const useIsomorphicLayoutEffect = typeof window !== 'undefined' ? useLayoutEffect : useEffect;

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
  const topic = topicOf(options.channel, options.entityId);
  const live = options.live;
  const awaitTimeoutMs = options.awaitTimeoutMs ?? 30_000;
  // A plain source is often written inline (a new object every render): follow
  // the latest one instead of starting over each render.
  const latestInput = useRef(input);
  latestInput.current = input;
  const collection = isCollectionLike(input) ? input : null;
  // A new store per (collection, key, client, topic): another entity starts from
  // its own data in this very render instead of showing the previous one.
  // `live` and `awaitTimeoutMs` only seed it; the effect below keeps them current.
  const store = useMemo(() => {
    const source = collection
      ? key === undefined
        ? collectionSource(collection)
        : collectionSource(collection as CollectionLike<unknown, string | number>, key)
      : latestSource(latestInput as { current: LiveDataSource<unknown> });
    return new LiveOrFrozenStore(source, client, topic, live, awaitTimeoutMs);
  }, [collection, key, client, topic]);
  const state = useSyncExternalStore(store.subscribe, store.getSnapshot, store.getServerSnapshot);
  useIsomorphicLayoutEffect(() => {
    store.awaitTimeoutMs = awaitTimeoutMs;
    store.setLive(live);
  }, [store, live, awaitTimeoutMs]);

  return {
    data: live ? state.current : state.frozen,
    isStale: !live && state.isStale,
    staleSignal: !live && state.isStale ? state.staleSignal : undefined,
    refresh: store.refresh,
    awaitTxId: store.awaitTxId,
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
  /**
   * When to connect. `"lazy"` (default): on the first subscription in a
   * browser, so calling `configureSync` at module scope opens nothing at import
   * time nor during a server render. `true`: now (e.g. a Node script).
   * `false`: only when you call `broadcast.connect()`.
   */
  connect?: boolean | 'lazy';
}

/**
 * Electric's parser for `int8` columns in {@link SyncConfig.electricShapeOptions}.
 * Electric parses `int8` (bigint, bigserial: most ids) as a BigInt by default,
 * while an API's JSON, its OpenAPI types and the keys its REST paths take have
 * a number: the same row would have a different key over Electric and over
 * REST. Values within Number.MAX_SAFE_INTEGER become numbers; beyond it a
 * number would be wrong, so they stay BigInt.
 */
export function parseInt8(value: string): number | bigint {
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : BigInt(value);
}

/** Shape options for one table: Electric's URL, the table, and `int8` parsed by {@link parseInt8}. */
export interface ElectricShapeOptions {
  url: string;
  params: { table: string };
  parser: { int8: (value: string) => number | bigint };
}

export interface SyncConfig {
  broadcast: BroadcastClient;
  /**
   * Shape options for `electricCollectionOptions({ shapeOptions: electricShapeOptions("orders"), ... })`
   * (spread them to add your own `parser` entries or params).
   */
  electricShapeOptions: (table: string) => ElectricShapeOptions;
}

/**
 * One place for both URLs: a BroadcastClient and Electric shape options. Safe
 * at module scope: by default nothing connects until the first subscription
 * in a browser (see `connect`).
 */
export function configureSync(options: ConfigureSyncOptions): SyncConfig {
  const clientOptions: BroadcastClientOptions = {
    url: options.broadcastUrl,
    ...(options.getToken ? { getToken: options.getToken } : {}),
    ...(options.WebSocket ? { WebSocket: options.WebSocket } : {}),
  };
  const broadcast = createBroadcastClient(clientOptions, options.connect ?? 'lazy');
  return {
    broadcast,
    electricShapeOptions: (table: string) => ({ url: options.electricUrl, params: { table }, parser: { int8: parseInt8 } }),
  };
}
