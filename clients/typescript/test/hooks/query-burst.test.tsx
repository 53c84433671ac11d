/** Bursts of signals against TanStack Query: the UI must keep updating (fake timers drive slow fetches). */
import { act, cleanup, renderHook } from '@testing-library/react';
import { QueryClient, QueryClientProvider, useQuery } from '@tanstack/react-query';
import type { ReactNode } from 'react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BroadcastClient } from '../../src/client.js';
import { BroadcastProvider } from '../../src/react.js';
import { bindQueryInvalidation, useBroadcastQueryInvalidation } from '../../src/tanstack.js';
import { FakeWebSocket } from '../fake-ws.js';

function openClient(): BroadcastClient {
  const client = new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket });
  client.connect();
  FakeWebSocket.last.welcome();
  return client;
}

beforeEach(() => {
  FakeWebSocket.reset();
  vi.useFakeTimers();
});
afterEach(() => {
  cleanup();
  vi.useRealTimers();
});

describe('query invalidation under a burst of signals', () => {
  it('one signal every 20 ms with a 50 ms fetch: the data follows the writes and ends on the last one', async () => {
    const client = openClient();
    const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false } } });
    // The "database": the fetch reads it when it starts and answers 50 ms later,
    // so a fetch that started before a write returns the value before it.
    let db = 0;
    let fetches = 0;
    const queryFn = async () => {
      fetches += 1;
      const value = db;
      await new Promise((r) => setTimeout(r, 50));
      return value;
    };
    const wrapper = ({ children }: { children: ReactNode }) => (
      <QueryClientProvider client={queryClient}>
        <BroadcastProvider client={client}>{children}</BroadcastProvider>
      </QueryClientProvider>
    );
    const { result } = renderHook(
      () => {
        useBroadcastQueryInvalidation({ channel: 'order', queryKey: () => [['orders']] });
        return useQuery({ queryKey: ['orders'], queryFn });
      },
      { wrapper },
    );
    await act(async () => {
      await vi.advanceTimersByTimeAsync(100);
    });
    expect(result.current.data).toBe(0);
    fetches = 0;

    const signals = 100;
    let seenMidBurst: number | undefined;
    for (let i = 1; i <= signals; i++) {
      await act(async () => {
        db = i;
        FakeWebSocket.last.signal('order', 'updated', { entity_id: '1', txid: i }, i);
        await vi.advanceTimersByTimeAsync(20);
      });
      if (i === signals / 2) seenMidBurst = result.current.data;
    }
    await act(async () => {
      await vi.advanceTimersByTimeAsync(500);
    });

    // The UI moved during the burst (it did not: each signal cancelled the fetch in flight) ...
    expect(seenMidBurst).toBeGreaterThanOrEqual(signals / 2 - 5);
    // ... shows the last write at the end ...
    expect(result.current.data).toBe(signals);
    // ... with far fewer fetches than signals (at most one per fetch duration, plus the trailing one).
    expect(fetches).toBeLessThanOrEqual(signals / 2);
  });

  it('signals in the same frame invalidate a key once, at the next frame (never cancelling it)', async () => {
    const client = openClient();
    const queryClient = new QueryClient();
    const spy = vi.spyOn(queryClient, 'invalidateQueries');
    bindQueryInvalidation(client, queryClient, { channel: 'order', queryKey: () => [['orders']] });
    for (let i = 0; i < 10; i++) FakeWebSocket.last.signal('order', 'updated', { entity_id: String(i) });
    // Coalesced to the next frame (requestAnimationFrame; a 16 ms timer without it).
    expect(spy).toHaveBeenCalledTimes(0);
    await vi.advanceTimersByTimeAsync(16);
    expect(spy).toHaveBeenCalledTimes(1);
    expect(spy.mock.calls[0]).toEqual([{ queryKey: ['orders'] }, { cancelRefetch: false }]);
    await vi.advanceTimersByTimeAsync(100);
    expect(spy).toHaveBeenCalledTimes(1);
  });

  it('accepts TanStack InvalidateQueryFilters besides keys', async () => {
    const client = openClient();
    const queryClient = new QueryClient();
    queryClient.setQueryData(['orders', 1], 'a');
    queryClient.setQueryData(['orders', 1, 'items'], 'b');
    const spy = vi.spyOn(queryClient, 'invalidateQueries');
    bindQueryInvalidation(client, queryClient, {
      channel: 'order',
      queryKey: (id) => [{ queryKey: ['orders', Number(id)], exact: true, refetchType: 'all' }],
    });
    FakeWebSocket.last.signal('order', 'updated', { entity_id: '1' });
    await vi.advanceTimersByTimeAsync(16);
    expect(spy.mock.calls[0]).toEqual([
      { queryKey: ['orders', 1], exact: true, refetchType: 'all' },
      { cancelRefetch: false },
    ]);
    expect(queryClient.getQueryState(['orders', 1])?.isInvalidated).toBe(true);
    expect(queryClient.getQueryState(['orders', 1, 'items'])?.isInvalidated).toBe(false);
  });
});
