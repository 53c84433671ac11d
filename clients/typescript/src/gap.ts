/** Internal helper shared by the TanStack Query and TanStack DB bindings (not a public entry point). */

/**
 * Remembers which keys a `live` or a `resync` invalidated in the current tick:
 * on a reconnect the resume's `subscribed` and a `resync` (the server's, or
 * the client's `resubscribed` one) often come together, and one fetch after
 * both covers both; the second would only fetch the same data again.
 */
export function gapTracker<K>(): { claim: (key: K) => boolean } {
  const claimed = new Set<K>();
  return {
    claim(key) {
      if (claimed.has(key)) return false;
      if (claimed.size === 0) queueMicrotask(() => claimed.clear());
      claimed.add(key);
      return true;
    },
  };
}

/** One frame (~16 ms): `requestAnimationFrame` where it exists (and the page is visible), else a 16 ms timer. */
export function nextFrame(run: () => void): () => void {
  const g = globalThis as {
    requestAnimationFrame?: (cb: () => void) => number;
    cancelAnimationFrame?: (id: number) => void;
    document?: { visibilityState?: string };
  };
  // A hidden tab gets no animation frames: a timer still delivers (a little later, when the browser throttles it).
  if (typeof g.requestAnimationFrame === 'function' && g.document?.visibilityState !== 'hidden') {
    const id = g.requestAnimationFrame(run);
    return () => g.cancelAnimationFrame?.(id);
  }
  const timer = setTimeout(run, 16);
  return () => clearTimeout(timer);
}

/** How many txids a key remembers as covered by a fetch (older ones are forgotten). */
const COVERED_TXIDS = 256;
/** How many keys' states a coalescer keeps while idle (least recently used go first). */
const IDLE_KEYS = 256;

/**
 * One round of a refetch: `joined` says it joined a fetch that was already
 * running (which may predate the signals: another round must follow it);
 * `done` settles when the round's fetch has.
 */
export interface RefetchRound {
  joined: boolean;
  done: Promise<unknown>;
}

interface KeyState<D> {
  data: D;
  running: boolean;
  /** Signals (or gaps) not covered by a round that started after them. */
  dirty: boolean;
  /** txids of those signals. */
  fresh: Set<number>;
  /** txids whose first signal came before a round (not a joined one) started: later signals with them need no refetch. */
  covered: Set<number>;
}

/**
 * Coalesces refetches per key (a query key, a collection). Rules:
 * - a signal marks the key dirty and schedules a round at the next frame, so
 *   a burst of signals within a frame costs one round, not one per signal;
 * - a signal whose txid a round already covers (the round started after the
 *   first signal of that transaction: signals are sent at commit, so it read
 *   all of the transaction's writes) changes nothing;
 * - a signal arriving while a round runs (a new txid, or none) makes one more
 *   round follow it right away: that fetch may have read before the write;
 * - `now` (a `live` or a `resync`: a gap of unknown writes) starts a round at
 *   once, or one more after the running one, whatever the txids; it also
 *   covers the signals waiting for the frame, and forgets which txids were
 *   covered (after a gap they may be another database's).
 * At most one round per key runs at a time.
 */
export function refetchCoalescer<K, D = undefined>(
  start: (key: K, data: D) => RefetchRound,
  onError?: (error: unknown) => void,
): {
  /** `data`: what the round needs for this key (the latest one is used). */
  signal: (key: K, txid: number | undefined, data: D) => void;
  now: (key: K, data: D) => void;
  stop: () => void;
} {
  const states = new Map<K, KeyState<D>>();
  let active = true;
  let cancelFrame: (() => void) | null = null;

  const state = (key: K, data: D): KeyState<D> => {
    let s = states.get(key);
    if (s) {
      s.data = data;
      // Most recently used last.
      states.delete(key);
      states.set(key, s);
      return s;
    }
    s = { data, running: false, dirty: false, fresh: new Set(), covered: new Set() };
    states.set(key, s);
    if (states.size > IDLE_KEYS) {
      for (const [k, old] of states) {
        if (states.size <= IDLE_KEYS) break;
        if (!old.running && !old.dirty) states.delete(k);
      }
    }
    return s;
  };

  const run = async (key: K, s: KeyState<D>): Promise<void> => {
    s.running = true;
    try {
      while (s.dirty && active) {
        s.dirty = false;
        const txids = s.fresh;
        s.fresh = new Set();
        let round: RefetchRound;
        try {
          round = start(key, s.data);
        } catch (error) {
          onError?.(error);
          continue;
        }
        if (round.joined) {
          // The fetch joined may predate these signals: they stay uncovered, and one more round follows.
          s.dirty = true;
          for (const t of txids) s.fresh.add(t);
        } else {
          for (const t of txids) {
            s.covered.delete(t);
            s.covered.add(t);
            if (s.covered.size > COVERED_TXIDS) s.covered.delete(s.covered.values().next().value as number);
          }
        }
        try {
          await round.done;
        } catch (error) {
          onError?.(error);
        }
      }
    } finally {
      s.running = false;
    }
  };

  const flushFrame = (): void => {
    cancelFrame = null;
    if (!active) return;
    for (const [key, s] of [...states]) if (s.dirty && !s.running) void run(key, s);
  };

  return {
    signal(key, txid, data) {
      if (!active) return;
      const s = state(key, data);
      if (txid !== undefined) {
        if (s.covered.has(txid)) return;
        s.fresh.add(txid);
      }
      s.dirty = true;
      // A running round picks it up when it ends; else the next frame does.
      if (!s.running && !cancelFrame) cancelFrame = nextFrame(flushFrame);
    },
    now(key, data) {
      if (!active) return;
      const s = state(key, data);
      s.dirty = true;
      // After a gap the txids seen before may name other transactions (a
      // server on a new database counts them again): none covers anything.
      s.covered.clear();
      // The first round starts synchronously (run's body up to its first await).
      if (!s.running) void run(key, s);
    },
    stop() {
      active = false;
      cancelFrame?.();
      cancelFrame = null;
    },
  };
}
