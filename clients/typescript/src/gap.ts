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
