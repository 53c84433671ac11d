/**
 * The fetch-to-live gap: a query fetched before its topic's subscription was
 * acknowledged misses the writes committed in between (they were never
 * signalled). The bindings invalidate / refetch once when the topic becomes
 * `live`, first and after every reconnect, and a `resync` in the same tick
 * shares that invalidation instead of adding one.
 */
import { act, cleanup, renderHook } from '@testing-library/react';
import { QueryClient, QueryClientProvider, useQuery } from '@tanstack/react-query';
import { StrictMode, type ReactNode } from 'react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BroadcastClient } from '../../src/client.js';
import { BroadcastProvider } from '../../src/react.js';
import { bindQueryCollection, bindQueryInvalidation, useBroadcastQueryInvalidation } from '../../src/tanstack.js';
import { FakeWebSocket } from '../fake-ws.js';

/** Ends the current tick: the client's batched subscribes go out. */
const tick = () => vi.advanceTimersByTimeAsync(0);

function openClient(): BroadcastClient {
  // random 0: reconnects without a backoff wait.
  const client = new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket, random: () => 0 });
  client.connect();
  FakeWebSocket.last.welcome();
  return client;
}

/** Drops the connection and answers the reconnect's welcome (the resubscribe is not acknowledged yet). */
async function reconnect(): Promise<FakeWebSocket> {
  FakeWebSocket.last.serverClose(1006);
  await tick();
  FakeWebSocket.last.welcome();
  await tick();
  return FakeWebSocket.last;
}

beforeEach(() => {
  FakeWebSocket.reset();
  vi.useFakeTimers();
});
afterEach(() => {
  cleanup();
  vi.useRealTimers();
});

describe('bindQueryInvalidation when the topic goes live', () => {
  it('the `subscribed` ack invalidates the bound key exactly once (cancelRefetch: false)', async () => {
    const client = openClient();
    const queryClient = new QueryClient();
    const spy = vi.spyOn(queryClient, 'invalidateQueries');
    bindQueryInvalidation(client, queryClient, {
      channel: 'order',
      entityId: 7,
      queryKey: (id) => (id ? [['orders', id]] : [['orders']]),
    });
    await tick();
    expect(FakeWebSocket.last.sent).toEqual([{ subscribe: ['order:7'] }]);
    expect(spy).not.toHaveBeenCalled();
    FakeWebSocket.last.serverSend({ type: 'subscribed', channels: ['order:7'] });
    expect(spy).toHaveBeenCalledTimes(1);
    expect(spy.mock.calls[0]).toEqual([{ queryKey: ['orders', '7'] }, { cancelRefetch: false }]);
    await tick();
    await tick();
    expect(spy).toHaveBeenCalledTimes(1);
  });

  it('a channel binding invalidates the channel-wide keys (queryKey(undefined))', async () => {
    const client = openClient();
    const queryClient = new QueryClient();
    const spy = vi.spyOn(queryClient, 'invalidateQueries');
    const queryKey = vi.fn((id?: string) => (id ? [['orders', id]] : [['orders']]));
    bindQueryInvalidation(client, queryClient, { channel: 'order', queryKey });
    await tick();
    FakeWebSocket.last.serverSend({ type: 'subscribed', channels: ['order'] });
    expect(queryKey).toHaveBeenCalledWith(undefined);
    expect(spy.mock.calls).toEqual([[{ queryKey: ['orders'] }, { cancelRefetch: false }]]);
  });

  it('invalidates again when live after a reconnect, once even with a resync in the same tick (either order)', async () => {
    const client = openClient();
    const queryClient = new QueryClient();
    const spy = vi.spyOn(queryClient, 'invalidateQueries');
    const onSignal = vi.fn();
    bindQueryInvalidation(client, queryClient, { channel: 'order', queryKey: () => [['orders']], onSignal });
    await tick();
    FakeWebSocket.last.serverSend({ type: 'subscribed', channels: ['order'] });
    await tick();
    expect(spy).toHaveBeenCalledTimes(1);

    // Ack, then the server's resync for the resume, in one tick: one invalidation.
    let ws = await reconnect();
    expect(spy).toHaveBeenCalledTimes(1); // pending is no reason to invalidate
    ws.serverSend({ type: 'subscribed', channels: ['order'] });
    ws.signal('order', 'resync', { reason: 'resume_unavailable' });
    expect(spy).toHaveBeenCalledTimes(2);
    await tick();
    await tick();
    expect(spy).toHaveBeenCalledTimes(2);
    expect(onSignal).toHaveBeenCalledTimes(1); // the resync is still reported

    // Resync first, then the ack, in one tick: still one.
    ws = await reconnect();
    ws.signal('order', 'resync', { reason: 'resume_unavailable' });
    ws.serverSend({ type: 'subscribed', channels: ['order'] });
    await tick();
    await tick();
    expect(spy).toHaveBeenCalledTimes(3);

    // Live again without a resync: the gap is covered all the same.
    ws = await reconnect();
    ws.serverSend({ type: 'subscribed', channels: ['order'] });
    expect(spy).toHaveBeenCalledTimes(4);

    // A resync in a later tick is news (e.g. the server's LISTEN was lost): it invalidates.
    await tick();
    ws.signal('order', 'resync', { reason: 'listener_lost' });
    expect(spy).toHaveBeenCalledTimes(5);
  });

  it('a topic the server dropped and re-granted: its `resubscribed` resync and the live share one invalidation', async () => {
    const client = openClient();
    const queryClient = new QueryClient();
    const spy = vi.spyOn(queryClient, 'invalidateQueries');
    bindQueryInvalidation(client, queryClient, { channel: 'order', queryKey: () => [['orders']] });
    await tick();
    const ws = FakeWebSocket.last;
    ws.serverSend({ type: 'subscribed', channels: ['order'] });
    await tick();
    ws.serverSend({ type: 'unsubscribed', channels: ['order'], reason: 'authorization_unavailable' });
    await vi.advanceTimersByTimeAsync(60_000);
    spy.mockClear();
    ws.serverSend({ type: 'subscribed', channels: ['order'] });
    await tick();
    await tick();
    expect(spy).toHaveBeenCalledTimes(1);
  });

  it('stops with the off function: a later live invalidates nothing', async () => {
    const client = openClient();
    const queryClient = new QueryClient();
    const spy = vi.spyOn(queryClient, 'invalidateQueries');
    const off = bindQueryInvalidation(client, queryClient, { channel: 'order', queryKey: () => [['orders']] });
    const keep = client.subscribe('order', () => {}); // someone else keeps the topic
    await tick();
    off();
    FakeWebSocket.last.serverSend({ type: 'subscribed', channels: ['order'] });
    expect(spy).not.toHaveBeenCalled();
    keep();
  });
});

describe('useBroadcastQueryInvalidation when the topic goes live', () => {
  it('refetches a query loaded before the ack once, in StrictMode, and shows the write made in the gap', async () => {
    const client = openClient();
    const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false } } });
    let db = 'before';
    let fetches = 0;
    const queryFn = async () => {
      fetches += 1;
      return db;
    };
    const wrapper = ({ children }: { children: ReactNode }) => (
      <StrictMode>
        <QueryClientProvider client={queryClient}>
          <BroadcastProvider client={client}>{children}</BroadcastProvider>
        </QueryClientProvider>
      </StrictMode>
    );
    const { result } = renderHook(
      () => {
        useBroadcastQueryInvalidation({ channel: 'order', entityId: '1', queryKey: (id) => [['orders', id ?? 'all']] });
        return useQuery({ queryKey: ['orders', '1'], queryFn });
      },
      { wrapper },
    );
    await act(async () => {
      await vi.advanceTimersByTimeAsync(10);
    });
    expect(result.current.data).toBe('before');
    expect(FakeWebSocket.last.sent).toEqual([{ subscribe: ['order:1'] }]);
    const fetchesBeforeAck = fetches;
    // Committed after the fetch, before the subscription was live: no signal for it, ever.
    db = 'in the gap';
    const spy = vi.spyOn(queryClient, 'invalidateQueries');
    await act(async () => {
      FakeWebSocket.last.serverSend({ type: 'subscribed', channels: ['order:1'] });
      await vi.advanceTimersByTimeAsync(10);
    });
    expect(spy).toHaveBeenCalledTimes(1);
    expect(spy.mock.calls[0]).toEqual([{ queryKey: ['orders', '1'] }, { cancelRefetch: false }]);
    expect(fetches).toBe(fetchesBeforeAck + 1);
    expect(result.current.data).toBe('in the gap');
  });
});

describe('bindQueryCollection when the topic goes live', () => {
  it('refetches once on the ack, and once per reconnect even with a resync in the same tick', async () => {
    const client = openClient();
    const refetch = vi.fn(async () => {});
    bindQueryCollection(client, { utils: { refetch } }, { channel: 'order', entityId: 3 });
    await tick();
    expect(refetch).not.toHaveBeenCalled();
    FakeWebSocket.last.serverSend({ type: 'subscribed', channels: ['order:3'] });
    await tick();
    await tick();
    expect(refetch).toHaveBeenCalledTimes(1);

    const ws = await reconnect();
    ws.serverSend({ type: 'subscribed', channels: ['order:3'] });
    ws.signal('order', 'resync', { reason: 'resume_unavailable' });
    await tick();
    await tick();
    expect(refetch).toHaveBeenCalledTimes(2);

    // Ordinary signals still refetch (at the next frame: coalesced).
    ws.signal('order', 'updated', { entity_id: 3 });
    await vi.advanceTimersByTimeAsync(16);
    expect(refetch).toHaveBeenCalledTimes(3);
  });
});
