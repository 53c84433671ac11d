/**
 * Refetch coalescing across ticks: the signals of one transaction (same txid,
 * e.g. `updated` + `status_changed` of one PATCH, in two WebSocket messages)
 * and a burst of signals within one frame cost one refetch per query key /
 * collection, without losing a write: a new txid arriving while a fetch runs
 * still refetches after it, and so does a txid whose first signal came after
 * the running fetch started.
 */
import { QueryClient, QueryObserver } from '@tanstack/query-core';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BroadcastClient } from '../../src/client.js';
import { bindQueryCollection, bindQueryInvalidation } from '../../src/tanstack.js';
import { FakeWebSocket } from '../fake-ws.js';

function openClient(): BroadcastClient {
  const client = new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket });
  client.connect();
  FakeWebSocket.last.welcome();
  return client;
}

let seq = 0;
/** A signal as its own WebSocket message (its own macrotask). */
const send = (event: string, payload: Record<string, unknown>) => FakeWebSocket.last.signal('order', event, payload, ++seq);

/** Waits (fake time) until a frame starts, so what follows fits in one frame. */
async function toFrameStart(): Promise<void> {
  let framed = false;
  if (typeof requestAnimationFrame === 'function') requestAnimationFrame(() => (framed = true));
  else framed = true;
  while (!framed) await vi.advanceTimersByTimeAsync(1);
}

/**
 * A "database" and an active query over it whose fetch reads the value when
 * it starts and answers `fetchMs` later (so a fetch that started before a
 * write returns the value before it).
 */
async function setupQuery(fetchMs: number) {
  const client = openClient();
  const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false, staleTime: Infinity } } });
  const state = { db: 0, fetches: 0, fetchStarts: [] as number[] };
  const observer = new QueryObserver(queryClient, {
    queryKey: ['orders'],
    queryFn: async () => {
      state.fetches += 1;
      state.fetchStarts.push(Date.now());
      const value = state.db;
      if (fetchMs > 0) await new Promise((r) => setTimeout(r, fetchMs));
      return value;
    },
  });
  const unsubscribe = observer.subscribe(() => {});
  await vi.advanceTimersByTimeAsync(fetchMs + 10);
  expect(queryClient.getQueryData(['orders'])).toBe(0);
  const off = bindQueryInvalidation(client, queryClient, { channel: 'order', queryKey: () => [['orders']] });
  state.fetches = 0;
  state.fetchStarts = [];
  return {
    client,
    queryClient,
    state,
    data: () => queryClient.getQueryData(['orders']),
    done: () => {
      off();
      unsubscribe();
    },
  };
}

beforeEach(() => {
  FakeWebSocket.reset();
  vi.useFakeTimers();
});
afterEach(() => {
  vi.unstubAllGlobals();
  vi.useRealTimers();
});

describe('bindQueryInvalidation: one refetch per transaction / per frame', () => {
  it('two signals of one transaction (same txid) 5 ms apart, in separate ticks, while the fetch runs: one fetch', async () => {
    const q = await setupQuery(50);
    q.state.db = 1;
    send('updated', { entity_id: '1', txid: 100 });
    await vi.advanceTimersByTimeAsync(5);
    send('status_changed', { entity_id: '1', txid: 100 });
    await vi.advanceTimersByTimeAsync(500);
    expect(q.state.fetches).toBe(1);
    expect(q.data()).toBe(1);
    q.done();
  });

  it('two signals of one transaction, the second after the fetch finished: one fetch', async () => {
    const q = await setupQuery(0);
    q.state.db = 1;
    send('updated', { entity_id: '1', txid: 100 });
    await vi.advanceTimersByTimeAsync(40);
    expect(q.state.fetches).toBe(1);
    send('status_changed', { entity_id: '1', txid: 100 });
    await vi.advanceTimersByTimeAsync(500);
    expect(q.state.fetches).toBe(1);
    expect(q.data()).toBe(1);
    q.done();
  });

  it('after a resync a txid seen before covers nothing (a server on a new database counts txids again)', async () => {
    const q = await setupQuery(0);
    q.state.db = 1;
    send('updated', { entity_id: '1', txid: 100 });
    await vi.advanceTimersByTimeAsync(40);
    expect(q.state.fetches).toBe(1);
    send('resync', { reason: 'listener_reconnected' });
    await vi.advanceTimersByTimeAsync(40);
    expect(q.state.fetches).toBe(2);
    // The same txid, now another transaction: it is fetched.
    q.state.db = 2;
    send('created', { entity_id: '2', txid: 100 });
    await vi.advanceTimersByTimeAsync(40);
    expect(q.state.fetches).toBe(3);
    expect(q.data()).toBe(2);
    q.done();
  });

  it('a burst of 10 signals with distinct txids inside one frame: one fetch, with the last write', async () => {
    const q = await setupQuery(50);
    await toFrameStart();
    for (let i = 1; i <= 10; i++) {
      q.state.db = i;
      send('updated', { entity_id: String(i), txid: 200 + i });
      await vi.advanceTimersByTimeAsync(1);
    }
    await vi.advanceTimersByTimeAsync(500);
    expect(q.state.fetches).toBe(1);
    expect(q.data()).toBe(10);
    q.done();
  });

  it('without requestAnimationFrame a 16 ms timer coalesces the burst', async () => {
    vi.stubGlobal('requestAnimationFrame', undefined);
    const q = await setupQuery(50);
    const t0 = Date.now();
    for (let i = 1; i <= 10; i++) {
      q.state.db = i;
      send('updated', { entity_id: String(i), txid: 300 + i });
      await vi.advanceTimersByTimeAsync(1);
    }
    await vi.advanceTimersByTimeAsync(500);
    expect(q.state.fetches).toBe(1);
    expect(q.state.fetchStarts[0]! - t0).toBeLessThanOrEqual(16);
    expect(q.data()).toBe(10);
    q.done();
  });

  it('a new txid arriving while the fetch runs still refetches after it', async () => {
    const q = await setupQuery(50);
    q.state.db = 1;
    send('updated', { entity_id: '1', txid: 400 });
    await vi.advanceTimersByTimeAsync(30); // the fetch (of db = 1) started, still running
    expect(q.state.fetches).toBe(1);
    q.state.db = 2;
    send('updated', { entity_id: '1', txid: 401 });
    await vi.advanceTimersByTimeAsync(500);
    expect(q.state.fetches).toBe(2);
    expect(q.data()).toBe(2);
    q.done();
  });

  it('same txid again, but the fetch in flight started before the first signal of that txid: still a refetch', async () => {
    const q = await setupQuery(50);
    // Someone else's fetch starts before the write.
    void q.queryClient.refetchQueries({ queryKey: ['orders'] });
    await vi.advanceTimersByTimeAsync(10);
    expect(q.state.fetches).toBe(1);
    q.state.db = 1;
    send('updated', { entity_id: '1', txid: 500 });
    await vi.advanceTimersByTimeAsync(20);
    send('status_changed', { entity_id: '1', txid: 500 });
    await vi.advanceTimersByTimeAsync(500);
    // The first fetch read db = 0; one more fetch followed it, and it started after the signals.
    expect(q.state.fetches).toBe(2);
    expect(q.data()).toBe(1);
    q.done();
  });

  it('a resync always refetches, even right after a fetch that covered every txid', async () => {
    const q = await setupQuery(0);
    send('updated', { entity_id: '1', txid: 600 });
    await vi.advanceTimersByTimeAsync(40);
    expect(q.state.fetches).toBe(1);
    q.state.db = 7;
    send('resync', { reason: 'listener_lost' });
    await vi.advanceTimersByTimeAsync(40);
    expect(q.state.fetches).toBe(2);
    expect(q.data()).toBe(7);
    q.done();
  });
});

describe('bindQueryCollection: one refetch per transaction / per frame', () => {
  function setupCollection(fetchMs: number) {
    const client = openClient();
    const refetch = vi.fn(() => new Promise<void>((r) => setTimeout(r, fetchMs)));
    const off = bindQueryCollection(client, { utils: { refetch } }, { channel: 'order' });
    return { client, refetch, off };
  }

  it('two signals of one transaction 5 ms apart in separate ticks: one refetch', async () => {
    const c = setupCollection(50);
    send('updated', { entity_id: '1', txid: 700 });
    await vi.advanceTimersByTimeAsync(5);
    send('status_changed', { entity_id: '1', txid: 700 });
    await vi.advanceTimersByTimeAsync(500);
    expect(c.refetch).toHaveBeenCalledTimes(1);
    c.off();
  });

  it('a burst of 10 distinct txids inside one frame: one refetch; a new txid during it: one more', async () => {
    const c = setupCollection(50);
    await toFrameStart();
    for (let i = 1; i <= 10; i++) {
      send('updated', { entity_id: String(i), txid: 800 + i });
      await vi.advanceTimersByTimeAsync(1);
    }
    await vi.advanceTimersByTimeAsync(500);
    expect(c.refetch).toHaveBeenCalledTimes(1);
    send('updated', { entity_id: '1', txid: 900 });
    await vi.advanceTimersByTimeAsync(30); // its refetch started, still running
    expect(c.refetch).toHaveBeenCalledTimes(2);
    send('updated', { entity_id: '1', txid: 805 }); // covered by the first refetch
    send('updated', { entity_id: '1', txid: 900 }); // covered by the running one
    send('updated', { entity_id: '1', txid: 901 }); // new: one more after the running one
    await vi.advanceTimersByTimeAsync(500);
    expect(c.refetch).toHaveBeenCalledTimes(3);
    c.off();
  });

  it('nothing after the off function, not even a frame already scheduled', async () => {
    const c = setupCollection(0);
    send('updated', { entity_id: '1', txid: 1000 });
    c.off();
    await vi.advanceTimersByTimeAsync(100);
    expect(c.refetch).not.toHaveBeenCalled();
  });
});
