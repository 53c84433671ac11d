import { act, cleanup, render, renderHook } from '@testing-library/react';
import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { createCollection, localOnlyCollectionOptions } from '@tanstack/db';
import type { ReactNode } from 'react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BroadcastClient } from '../../src/client.js';
import { BroadcastProvider, useBroadcastState, useBroadcastSync } from '../../src/react.js';
import {
  bindQueryCollection,
  bindQueryInvalidation,
  configureSync,
  parseInt8,
  useBroadcastQueryInvalidation,
  useLiveOrFrozen,
  type LiveDataSource,
} from '../../src/tanstack.js';
import { FakeWebSocket } from '../fake-ws.js';

function openClient(): BroadcastClient {
  const client = new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket });
  client.connect();
  FakeWebSocket.last.welcome();
  return client;
}

function withProvider(client: BroadcastClient, queryClient?: QueryClient) {
  return ({ children }: { children: ReactNode }) => {
    const inner = <BroadcastProvider client={client}>{children}</BroadcastProvider>;
    return queryClient ? <QueryClientProvider client={queryClient}>{inner}</QueryClientProvider> : inner;
  };
}

let seq = 0;
function signal(channel: string, event: string, payload: Record<string, unknown>) {
  act(() => FakeWebSocket.last.signal(channel, event, payload, ++seq));
}
function resync(channel: string) {
  act(() => FakeWebSocket.last.signal(channel, 'resync', { reason: 'listener_reconnected' }));
}

/** Ordinary signals invalidate / refetch at the next frame (coalesced); live and resync at once. */
const frame = () => new Promise<void>((r) => requestAnimationFrame(() => r()));

beforeEach(() => FakeWebSocket.reset());
afterEach(() => cleanup());

describe('useBroadcastSync', () => {
  it('live: onInvalidate with the entity id; undefined for channel-wide and resync', () => {
    const client = openClient();
    const onInvalidate = vi.fn();
    const onStale = vi.fn();
    renderHook(() => useBroadcastSync({ channel: 'order', onInvalidate, onStale }), { wrapper: withProvider(client) });
    expect(FakeWebSocket.last.sent).toContainEqual({ subscribe: ['order'] });
    signal('order', 'created', { entity_id: '42', txid: 9 });
    signal('order', 'updated', { txid: 10, rows: 3 });
    resync('order');
    expect(onInvalidate.mock.calls.map((c) => c[0])).toEqual(['42', undefined, undefined]);
    expect(onInvalidate.mock.calls[0][1]).toMatchObject({ event: 'created', txid: 9 });
    expect(onInvalidate.mock.calls[2][1]).toMatchObject({ resync: true });
    expect(onStale).not.toHaveBeenCalled();
  });

  it('disabled: onStale instead, no invalidate; entity topic; unsubscribes on unmount', () => {
    const client = openClient();
    const onInvalidate = vi.fn();
    const onStale = vi.fn();
    const { unmount } = renderHook(
      () => useBroadcastSync({ channel: 'order', entityId: 7, enabled: false, onInvalidate, onStale }),
      { wrapper: withProvider(client) },
    );
    expect(FakeWebSocket.last.sent).toContainEqual({ subscribe: ['order:7'] });
    signal('order', 'status_changed', { entity_id: '7', txid: 11 });
    signal('order', 'status_changed', { entity_id: '8', txid: 12 }); // another entity: not for us
    expect(onInvalidate).not.toHaveBeenCalled();
    expect(onStale).toHaveBeenCalledTimes(1);
    expect(onStale.mock.calls[0][0]).toMatchObject({ entityId: '7', txid: 11 });
    unmount();
    expect(FakeWebSocket.last.sent).toContainEqual({ unsubscribe: ['order:7'] });
  });

  it('switching enabled does not resubscribe and routes the next signal accordingly', () => {
    const client = openClient();
    const onInvalidate = vi.fn();
    const onStale = vi.fn();
    const { rerender } = renderHook(
      ({ enabled }) => useBroadcastSync({ channel: 'order', enabled, onInvalidate, onStale }),
      { wrapper: withProvider(client), initialProps: { enabled: true } },
    );
    rerender({ enabled: false });
    signal('order', 'created', { entity_id: '1' });
    rerender({ enabled: true });
    signal('order', 'created', { entity_id: '2' });
    expect(onStale).toHaveBeenCalledTimes(1);
    expect(onInvalidate).toHaveBeenCalledWith('2', expect.anything());
    expect(FakeWebSocket.last.sent.filter((m) => 'subscribe' in m)).toHaveLength(1);
  });
});

describe('BroadcastProvider', () => {
  it('with options: state follows the socket (connecting → open → closed), and unmount closes the open socket for good', () => {
    vi.useFakeTimers();
    try {
      function Status() {
        const { state, isConnected } = useBroadcastState();
        return <span data-testid="s">{`${state}/${isConnected}`}</span>;
      }
      const backoff = { baseMs: 100, maxMs: 100 };
      const view = render(
        <BroadcastProvider options={{ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket, backoff }}>
          <Status />
        </BroadcastProvider>,
      );
      const text = () => view.getByTestId('s').textContent;
      expect(text()).toBe('connecting/false');
      expect(FakeWebSocket.instances).toHaveLength(1);
      const first = FakeWebSocket.last;
      act(() => first.welcome());
      expect(text()).toBe('open/true');
      act(() => first.serverClose(1001, 'server shutting down'));
      expect(text()).toBe('connecting/false'); // reconnecting
      // The backoff runs out: a second socket, which the server welcomes.
      act(() => vi.advanceTimersByTime(backoff.maxMs));
      expect(FakeWebSocket.instances).toHaveLength(2);
      const second = FakeWebSocket.last;
      act(() => second.welcome());
      expect(text()).toBe('open/true');
      expect(second.readyState).toBe(1);
      expect(second.closedWith).toBeNull();

      view.unmount();
      // The client closed the open socket itself (the server did not).
      expect(second.closedWith).toEqual({ code: 1000, reason: 'client disconnect' });
      expect(second.readyState).toBe(3);
      // And stays closed: far past any backoff, no socket is made.
      act(() => vi.advanceTimersByTime(60_000));
      expect(FakeWebSocket.instances).toHaveLength(2);
    } finally {
      vi.useRealTimers();
    }
  });

  it('with a client: does not own it, shows its state', () => {
    const client = openClient();
    const { result, unmount } = renderHook(() => useBroadcastState(), { wrapper: withProvider(client) });
    expect(result.current).toEqual({ state: 'open', isConnected: true });
    act(() => client.disconnect());
    expect(result.current).toEqual({ state: 'closed', isConnected: false });
    unmount();
  });
});

describe('TanStack Query', () => {
  const queryKey = (id?: string) => (id ? [['orders', id], ['orders', 'list']] : [['orders']]);

  it('useBroadcastQueryInvalidation invalidates the entity and list keys, all keys on resync', async () => {
    const client = openClient();
    const queryClient = new QueryClient();
    const spy = vi.spyOn(queryClient, 'invalidateQueries');
    renderHook(() => useBroadcastQueryInvalidation({ channel: 'order', queryKey }), {
      wrapper: withProvider(client, queryClient),
    });
    signal('order', 'item_added', { entity_id: '5', txid: 1 });
    await frame();
    expect(spy.mock.calls.map((c) => c[0])).toEqual([{ queryKey: ['orders', '5'] }, { queryKey: ['orders', 'list'] }]);
    spy.mockClear();
    resync('order');
    signal('order', 'updated', { rows: 100 });
    // Two signals for the same key in the same tick: one invalidation now (it
    // used to be two, the second cancelling the first's fetch), one more after it.
    expect(spy.mock.calls.map((c) => c[0])).toEqual([{ queryKey: ['orders'] }]);
    await vi.waitFor(() => expect(spy.mock.calls.map((c) => c[0])).toEqual([{ queryKey: ['orders'] }, { queryKey: ['orders'] }]));
    expect(spy.mock.calls.every((c) => c[1]?.cancelRefetch === false)).toBe(true);
  });

  it('invalidation really marks cached queries stale', async () => {
    const client = openClient();
    const queryClient = new QueryClient();
    queryClient.setQueryData(['orders', '5'], { id: 5 });
    queryClient.setQueryData(['orders', '6'], { id: 6 });
    const off = bindQueryInvalidation(client, queryClient, { channel: 'order', queryKey });
    signal('order', 'status_changed', { entity_id: '5' });
    await frame();
    expect(queryClient.getQueryState(['orders', '5'])?.isInvalidated).toBe(true);
    expect(queryClient.getQueryState(['orders', '6'])?.isInvalidated).toBe(false);
    off();
    expect(FakeWebSocket.last.sent).toContainEqual({ unsubscribe: ['order'] });
  });

  it('bindQueryCollection calls utils.refetch(), coalescing bursts', async () => {
    const client = openClient();
    let release!: () => void;
    const refetch = vi.fn(() => new Promise<void>((r) => (release = r)));
    bindQueryCollection(client, { utils: { refetch } }, { channel: 'order' });
    signal('order', 'created', { entity_id: '1' });
    signal('order', 'created', { entity_id: '2' });
    signal('order', 'created', { entity_id: '3' });
    // One refetch for the burst, at the next frame (it started after all three).
    expect(refetch).toHaveBeenCalledTimes(0);
    await frame();
    expect(refetch).toHaveBeenCalledTimes(1);
    // Signals while it runs: one more refetch after it.
    signal('order', 'created', { entity_id: '4' });
    signal('order', 'created', { entity_id: '5' });
    await act(async () => release());
    await vi.waitFor(() => expect(refetch).toHaveBeenCalledTimes(2));
    await act(async () => release());
    await frame();
    expect(refetch).toHaveBeenCalledTimes(2);
  });
});

describe('useLiveOrFrozen', () => {
  type Order = { id: number; status: string };
  function orders() {
    return createCollection(
      localOnlyCollectionOptions<Order, number>({
        id: `orders-${Math.random()}`,
        getKey: (o) => o.id,
        initialData: [
          { id: 1, status: 'new' },
          { id: 2, status: 'new' },
        ],
      }),
    );
  }

  it('live: false keeps the data, sets isStale on a signal; refresh() takes the current data', () => {
    const client = openClient();
    const collection = orders();
    const { result } = renderHook(
      () => useLiveOrFrozen(collection, { channel: 'order', entityId: '1', key: 1, live: false }),
      { wrapper: withProvider(client) },
    );
    expect(result.current.data).toMatchObject({ id: 1, status: 'new' });
    expect(result.current.isStale).toBe(false);
    act(() => {
      collection.update(1, (d) => {
        d.status = 'ready';
      });
    });
    signal('order', 'status_changed', { entity_id: '1', txid: 50 });
    expect(result.current.isStale).toBe(true);
    expect(result.current.staleSignal).toMatchObject({ txid: 50 });
    expect(result.current.data).toMatchObject({ id: 1, status: 'new' }); // frozen
    act(() => result.current.refresh());
    expect(result.current.isStale).toBe(false);
    expect(result.current.data).toMatchObject({ id: 1, status: 'ready' });
  });

  it('a change to the data alone marks it stale; other rows do not', () => {
    const client = openClient();
    const collection = orders();
    const { result } = renderHook(
      () => useLiveOrFrozen(collection, { channel: 'order', entityId: '1', key: 1, live: false }),
      { wrapper: withProvider(client) },
    );
    act(() => {
      collection.update(2, (d) => {
        d.status = 'ready';
      });
    });
    expect(result.current.isStale).toBe(false);
    act(() => {
      collection.update(1, (d) => {
        d.status = 'cancelled';
      });
    });
    expect(result.current.isStale).toBe(true);
    expect(result.current.data).toMatchObject({ id: 1, status: 'new' });
  });

  it('live: true returns the current data and is never stale', () => {
    const client = openClient();
    const collection = orders();
    const { result } = renderHook(
      () => useLiveOrFrozen(collection, { channel: 'order', entityId: '1', key: 1, live: true }),
      { wrapper: withProvider(client) },
    );
    act(() => {
      collection.update(1, (d) => {
        d.status = 'ready';
      });
    });
    signal('order', 'status_changed', { entity_id: '1' });
    expect(result.current.data).toMatchObject({ id: 1, status: 'ready' });
    expect(result.current.isStale).toBe(false);
  });

  it('awaitTxId delegates to the source and clears staleness caused by the own write', async () => {
    const client = openClient();
    let value = { id: 1, status: 'new' };
    const listeners = new Set<() => void>();
    let resolveAwait!: (v: boolean) => void;
    const source: LiveDataSource<Order> = {
      getSnapshot: () => value,
      subscribe: (l) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
      awaitTxId: vi.fn(() => new Promise<boolean>((r) => (resolveAwait = r))),
    };
    const { result } = renderHook(() => useLiveOrFrozen(source, { channel: 'order', entityId: '1', live: false }), {
      wrapper: withProvider(client),
    });
    let done!: Promise<boolean>;
    act(() => {
      done = result.current.awaitTxId(77);
    });
    signal('order', 'status_changed', { entity_id: '1', txid: 77 }); // own write: not stale
    expect(result.current.isStale).toBe(false);
    act(() => {
      value = { id: 1, status: 'ready' };
      listeners.forEach((l) => l());
    });
    expect(result.current.isStale).toBe(true); // the data moved under the form
    await act(async () => {
      resolveAwait(true);
      await done;
    });
    expect(source.awaitTxId).toHaveBeenCalledWith(77, undefined);
    expect(result.current.isStale).toBe(false);
    expect(result.current.data).toMatchObject({ id: 1, status: 'ready' });
  });

  it('awaitTxId without a source awaitTxId waits for the broadcast signal with that txid', async () => {
    const client = openClient();
    const source: LiveDataSource<string> = { getSnapshot: () => 'v', subscribe: () => () => {} };
    const { result } = renderHook(() => useLiveOrFrozen(source, { channel: 'order', live: false }), {
      wrapper: withProvider(client),
    });
    let done!: Promise<boolean>;
    act(() => {
      done = result.current.awaitTxId(5);
    });
    signal('order', 'created', { entity_id: '9', txid: 5 });
    await expect(done).resolves.toBe(true);
    expect(result.current.isStale).toBe(false);
    await expect(result.current.awaitTxId(6, 20)).resolves.toBe(false);
  });
});

describe('configureSync', () => {
  // It used to connect inside configureSync (so at import time when called at
  // module scope, as documented, and on the server). Now the default is lazy.
  it('returns a client that connects on its first subscription, and Electric shape options', () => {
    const { broadcast, electricShapeOptions } = configureSync({
      electricUrl: 'http://localhost:3000/v1/shape',
      broadcastUrl: 'ws://localhost:8080/ws/broadcast',
      WebSocket: FakeWebSocket,
    });
    expect(broadcast.state).toBe('closed');
    expect(FakeWebSocket.instances).toHaveLength(0);
    const off = broadcast.subscribe('order', () => {});
    expect(broadcast.state).toBe('connecting');
    expect(FakeWebSocket.last.url).toBe('ws://localhost:8080/ws/broadcast');
    expect(electricShapeOptions('orders')).toEqual({
      url: 'http://localhost:3000/v1/shape',
      params: { table: 'orders' },
      parser: { int8: parseInt8 },
    });
    off();
    broadcast.disconnect();
  });

  it('connect: true connects now; connect: false never by itself', () => {
    const now = configureSync({ electricUrl: 'http://e', broadcastUrl: 'ws://now/ws', WebSocket: FakeWebSocket, connect: true });
    expect(now.broadcast.state).toBe('connecting');
    expect(FakeWebSocket.instances.map((s) => s.url)).toEqual(['ws://now/ws']);
    now.broadcast.disconnect();
    const manual = configureSync({ electricUrl: 'http://e', broadcastUrl: 'ws://manual/ws', WebSocket: FakeWebSocket, connect: false });
    manual.broadcast.subscribe('order', () => {});
    expect(manual.broadcast.state).toBe('closed');
    expect(FakeWebSocket.instances).toHaveLength(1);
  });
});
