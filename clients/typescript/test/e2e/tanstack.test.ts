/**
 * The TanStack Query binding end to end against the real `pgbroadcast demo`
 * (its own private Postgres), with `ws` as the WebSocket:
 *  1. a burst of writes while every fetch is slow: the data ends on the last
 *     write, with far fewer fetches than writes (signals never cancel the
 *     fetch in flight; they are coalesced into one more fetch after it);
 *  2. 200 entity bindings made in one tick, React StrictMode style (bind,
 *     unbind, bind again): every topic goes live (each with one invalidation
 *     for the fetch-to-live gap), and each binding gets its own entity's
 *     `created` signal.
 *
 * The e2e project runs in Node (no DOM), so the bindings are used directly
 * (`bindQueryInvalidation`, what `useBroadcastQueryInvalidation` runs in its
 * effect) with query-core's `QueryObserver` standing in for `useQuery`.
 */
import { QueryClient, QueryObserver, hashKey } from '@tanstack/query-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { BroadcastClient, type BroadcastSignal, type ControlFrame } from '../../src/client.js';
import { bindQueryInvalidation } from '../../src/tanstack.js';
import { api, ensureBinary, startDemo, stopDemo, waitFor, type Demo } from './demo.js';

interface Order {
  id: number;
  customer: string;
  status: string;
  [k: string]: unknown;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('TanStack Query binding against the real pgbroadcast demo', () => {
  let demo: Demo | null = null;
  let client: BroadcastClient | null = null;
  const errors: ControlFrame[] = [];

  beforeAll(async () => {
    ensureBinary();
    demo = await startDemo();
    client = new BroadcastClient({ url: demo.wsUrl, WebSocket, backoff: { baseMs: 100, maxMs: 1000 } });
    client.onControl((f) => {
      if (f.type === 'error') errors.push(f);
    });
    client.connect();
    await waitFor('state open', () => client!.state === 'open');
  }, 1_500_000);

  afterAll(async () => {
    client?.disconnect();
    if (demo) await stopDemo(demo);
  }, 60_000);

  it('a burst of 32 writes during 100 ms fetches ends on the last write, with far fewer fetches', async () => {
    const { data: created } = await api<{ data: Order }>(demo!, 'POST', '/api/orders', { customer: 'burst' });
    const id = created.id;
    const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false } } });
    let fetches = 0;
    let inFlight = 0;
    // Reads the order, then takes 100 ms more: a fetch that started before a
    // write answers with the data before it.
    const queryFn = async (): Promise<Order> => {
      fetches += 1;
      inFlight += 1;
      try {
        const { data } = await api<{ data: Order }>(demo!, 'GET', `/api/orders/${id}`);
        await sleep(100);
        return data;
      } finally {
        inFlight -= 1;
      }
    };
    // An observer makes the query active (what a mounted useQuery does): invalidations refetch it.
    const observer = new QueryObserver(queryClient, { queryKey: ['orders', id], queryFn });
    const offObserver = observer.subscribe(() => {});
    const signals: BroadcastSignal[] = [];
    const off = bindQueryInvalidation(client!, queryClient, {
      channel: 'order',
      entityId: id,
      queryKey: (entityId) => (entityId ? [['orders', Number(entityId)]] : [['orders']]),
      onSignal: (s) => signals.push(s),
    });
    try {
      const topic = `order:${id}`;
      await waitFor('the order topic live', () => client!.topicStatus(topic) === 'live');
      await waitFor('the first data', () => observer.getCurrentResult().data?.status === 'new' && inFlight === 0);

      // Each write changes the status (a PATCH to the same status writes nothing).
      const statuses = ['preparing', 'ready', 'delivered', 'cancelled', 'new'];
      const writes = 32;
      fetches = 0;
      let last: Order | null = null;
      const txids: number[] = [];
      for (let i = 0; i < writes; i++) {
        const res = await api<{ data: Order; txid: number | null }>(demo!, 'PATCH', `/api/orders/${id}`, {
          status: statuses[i % statuses.length],
        });
        expect(res.txid).not.toBeNull();
        txids.push(res.txid!);
        last = res.data;
      }
      expect(last!.status).toBe('ready'); // not the starting status: staying put would not pass
      await waitFor(
        'the last write signalled',
        () => signals.some((s) => s.txid === txids.at(-1)),
        20_000,
        () => `; signals: ${JSON.stringify(signals.slice(-5))}`,
      );
      await waitFor(
        'the query to settle on the last write',
        () => observer.getCurrentResult().data?.status === last!.status && inFlight === 0 && !queryClient.isFetching(),
        20_000,
        () => `; data: ${JSON.stringify(observer.getCurrentResult().data)}, fetches: ${fetches}`,
      );
      // Nothing more is on the way, and it stays there.
      await sleep(300);
      expect(queryClient.isFetching()).toBe(0);
      const { data: now } = await api<{ data: Order }>(demo!, 'GET', `/api/orders/${id}`);
      expect(observer.getCurrentResult().data).toEqual(now);
      expect(now.status).toBe(last!.status);
      // At most about one fetch per fetch duration, plus the trailing one.
      expect(fetches).toBeGreaterThanOrEqual(1);
      expect(fetches).toBeLessThanOrEqual(writes / 3);
    } finally {
      off();
      offObserver();
    }
  });

  it('200 entity bindings made in one tick (StrictMode-style) all go live, and each gets its own signal', async () => {
    const count = 200;
    // The demo's ids come from a sequence: the next 200 orders get the next 200 ids.
    const { data: newest } = await api<{ data: Order[] }>(demo!, 'GET', '/api/orders?limit=1');
    const base = newest[0]?.id ?? 0;
    const ids = Array.from({ length: count }, (_, i) => base + 1 + i);
    const queryClient = new QueryClient();
    const invalidated = new Map<string, number>();
    const invalidate = queryClient.invalidateQueries.bind(queryClient);
    queryClient.invalidateQueries = ((filters, options) => {
      const key = hashKey(filters!.queryKey!);
      invalidated.set(key, (invalidated.get(key) ?? 0) + 1);
      return invalidate(filters, options);
    }) as typeof queryClient.invalidateQueries;

    const firstMount = new Map<number, BroadcastSignal[]>();
    const received = new Map<number, BroadcastSignal[]>();
    const bind = (id: number, into: Map<number, BroadcastSignal[]>) => {
      into.set(id, []);
      return bindQueryInvalidation(client!, queryClient, {
        channel: 'order',
        entityId: id,
        queryKey: (entityId) => (entityId ? [['orders', Number(entityId)]] : [['orders']]),
        onSignal: (s) => into.get(id)!.push(s),
      });
    };
    // StrictMode runs each effect, its cleanup and the effect again, all in one tick.
    const offs: Array<() => void> = [];
    for (const id of ids) bind(id, firstMount)();
    for (const id of ids) offs.push(bind(id, received));
    try {
      await waitFor(
        'every topic live',
        () => ids.every((id) => client!.topicStatus(`order:${id}`) === 'live'),
        30_000,
        () => `; not live: ${ids.filter((id) => client!.topicStatus(`order:${id}`) !== 'live').length}, errors: ${JSON.stringify(errors)}`,
      );
      expect(errors).toEqual([]);
      // Going live invalidated each entity's key once (the fetch-to-live gap), not twice for StrictMode.
      await sleep(100);
      for (const id of ids) expect(invalidated.get(hashKey(['orders', id])), `order ${id}`).toBe(1);

      const createdIds: number[] = [];
      for (let i = 0; i < count; i += 20) {
        const batch = await Promise.all(
          ids.slice(i, i + 20).map((_, j) =>
            api<{ data: Order; txid: number }>(demo!, 'POST', '/api/orders', { customer: `mount-${i + j}` }),
          ),
        );
        createdIds.push(...batch.map((r) => r.data.id));
      }
      expect([...createdIds].sort((a, b) => a - b)).toEqual(ids);
      await waitFor(
        "every binding's created signal",
        () => ids.every((id) => received.get(id)!.some((s) => s.event === 'created')),
        30_000,
        () => `; missing: ${ids.filter((id) => !received.get(id)!.some((s) => s.event === 'created')).slice(0, 10)}`,
      );
      for (const id of ids) {
        const got = received.get(id)!;
        // Its own entity only (no resync happened here).
        expect(got.every((s) => s.entityId === String(id) && !s.resync), `order ${id}: ${JSON.stringify(got)}`).toBe(true);
        expect(got.filter((s) => s.event === 'created')).toHaveLength(1);
        // The unmounted first binding got nothing.
        expect(firstMount.get(id)).toEqual([]);
      }
      expect(errors).toEqual([]);
    } finally {
      for (const off of offs) off();
    }
  });
});
