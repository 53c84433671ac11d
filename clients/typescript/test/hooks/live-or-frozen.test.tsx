/** useLiveOrFrozen: one test per defect of the issue (each failed before the store rewrite). */
import { act, cleanup, renderHook } from '@testing-library/react';
import { createCollection, localOnlyCollectionOptions } from '@tanstack/db';
import type { ReactNode } from 'react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BroadcastClient } from '../../src/client.js';
import { BroadcastProvider } from '../../src/react.js';
import { useLiveOrFrozen, type LiveDataSource } from '../../src/tanstack.js';
import { FakeWebSocket } from '../fake-ws.js';

function openClient(): BroadcastClient {
  const client = new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket });
  client.connect();
  FakeWebSocket.last.welcome();
  return client;
}
function withProvider(client: BroadcastClient) {
  return ({ children }: { children: ReactNode }) => <BroadcastProvider client={client}>{children}</BroadcastProvider>;
}
function staticSource<T>(read: () => T, extra: Partial<LiveDataSource<T>> = {}): LiveDataSource<T> {
  return { getSnapshot: read, subscribe: () => () => {}, ...extra };
}

type Order = { id: number; status: string };

beforeEach(() => FakeWebSocket.reset());
afterEach(() => {
  cleanup();
  vi.useRealTimers();
});

describe('useLiveOrFrozen', () => {
  it('is not stale at mount when the source returns a new but equal array on every read', () => {
    const client = openClient();
    const items = [{ id: 1 }, { id: 2 }];
    const listeners = new Set<() => void>();
    const source: LiveDataSource<Array<{ id: number }>> = {
      getSnapshot: () => items.slice(),
      subscribe: (l) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
    };
    const { result, rerender } = renderHook(() => useLiveOrFrozen(source, { channel: 'order', live: false }), {
      wrapper: withProvider(client),
    });
    expect(result.current.isStale).toBe(false);
    rerender();
    act(() => listeners.forEach((l) => l())); // a change notification without a change
    expect(result.current.isStale).toBe(false);
    expect(result.current.data).toEqual(items);
    // A real change still counts.
    act(() => {
      items.push({ id: 3 });
      listeners.forEach((l) => l());
    });
    expect(result.current.isStale).toBe(true);
    expect(result.current.data).toHaveLength(2);
  });

  it('shows the new entity in the same render when key / entityId change', () => {
    const client = openClient();
    const collection = createCollection(
      localOnlyCollectionOptions<Order, number>({
        id: `orders-${Math.random()}`,
        getKey: (o) => o.id,
        initialData: [
          { id: 1, status: 'new' },
          { id: 2, status: 'ready' },
        ],
      }),
    );
    const seen: Array<unknown> = [];
    const { result, rerender } = renderHook(
      ({ id }) => {
        const r = useLiveOrFrozen(collection, { channel: 'order', entityId: String(id), key: id, live: false });
        seen.push(r.data);
        return r;
      },
      { wrapper: withProvider(client), initialProps: { id: 1 } },
    );
    expect(result.current.data).toMatchObject({ id: 1 });
    seen.length = 0;
    rerender({ id: 2 });
    expect(seen[0]).toMatchObject({ id: 2, status: 'ready' }); // never the previous entity
    expect(result.current.data).toMatchObject({ id: 2, status: 'ready' });
    expect(result.current.isStale).toBe(false);
    expect(FakeWebSocket.last.sent).toContainEqual({ subscribe: ['order:2'] });
  });

  it('forgets the txids it saw when signals come from a new epoch (a server on another database counts txids again)', async () => {
    vi.useFakeTimers();
    const client = openClient();
    const { result } = renderHook(() => useLiveOrFrozen(staticSource(() => 'v'), { channel: 'order', live: false }), {
      wrapper: withProvider(client),
    });
    act(() => FakeWebSocket.last.signal('order', 'updated', { entity_id: '1', txid: 7 }, 1, 'e1'));
    await expect(result.current.awaitTxId(7)).resolves.toBe(true);
    act(() => FakeWebSocket.last.signal('order', 'updated', { entity_id: '2', txid: 3 }, 1, 'e2'));
    // txid 7 of the old epoch is not this epoch's 7: it waits for its own signal.
    let seven: boolean | undefined;
    void result.current.awaitTxId(7, 1000).then((v) => (seven = v));
    await act(async () => {
      await vi.advanceTimersByTimeAsync(0);
    });
    expect(seven).toBeUndefined();
    act(() => FakeWebSocket.last.signal('order', 'updated', { entity_id: '1', txid: 7 }, 2, 'e2'));
    await act(async () => {
      await vi.advanceTimersByTimeAsync(0);
    });
    expect(seven).toBe(true);
    // This epoch's txids are known at once.
    await expect(result.current.awaitTxId(3)).resolves.toBe(true);
  });

  it('remembers a bounded number of txids (the oldest are forgotten)', async () => {
    vi.useFakeTimers();
    const client = openClient();
    const { result } = renderHook(() => useLiveOrFrozen(staticSource(() => 'v'), { channel: 'order', live: false }), {
      wrapper: withProvider(client),
    });
    act(() => {
      for (let txid = 1; txid <= 5000; txid++) FakeWebSocket.last.signal('order', 'updated', { entity_id: '1', txid });
    });
    // The latest is known: resolves at once.
    await expect(result.current.awaitTxId(5000)).resolves.toBe(true);
    // The first was forgotten (it used to be kept forever): it waits and times out.
    let first: boolean | undefined;
    void result.current.awaitTxId(1, 100).then((v) => (first = v));
    await act(async () => {
      await vi.advanceTimersByTimeAsync(0);
    });
    expect(first).toBeUndefined();
    await act(async () => {
      await vi.advanceTimersByTimeAsync(100);
    });
    expect(first).toBe(false);
  });

  it("Electric's awaitTxId timeout rejection resolves false instead of escaping", async () => {
    const client = openClient();
    const source = staticSource(() => 'v', {
      awaitTxId: () => Promise.reject(new Error('Timeout waiting for txId: 5')),
    });
    const { result } = renderHook(() => useLiveOrFrozen(source, { channel: 'order', live: false }), {
      wrapper: withProvider(client),
    });
    let outcome!: Promise<boolean>;
    act(() => {
      outcome = result.current.awaitTxId(5);
    });
    await expect(outcome).resolves.toBe(false);
  });

  it('the fallback timer of a pending awaitTxId does not survive unmount', async () => {
    vi.useFakeTimers();
    const client = openClient();
    const { result, unmount } = renderHook(
      () => useLiveOrFrozen(staticSource(() => 'v'), { channel: 'order', live: false }),
      { wrapper: withProvider(client) },
    );
    const baseline = vi.getTimerCount(); // the client's own timers (heartbeat)
    let outcome: boolean | undefined;
    act(() => {
      void result.current.awaitTxId(9).then((v) => (outcome = v));
    });
    expect(vi.getTimerCount()).toBe(baseline + 1);
    unmount();
    expect(vi.getTimerCount()).toBe(baseline);
    await vi.advanceTimersByTimeAsync(0);
    expect(outcome).toBe(false);
  });
});
