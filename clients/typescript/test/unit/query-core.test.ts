/**
 * `@pgbroadcast/client/query-core`: the framework-free Query binding. It keys
 * its coalescing by TanStack's key hash, computed here without importing
 * TanStack at run time.
 */
import { QueryClient, hashKey } from '@tanstack/query-core';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BroadcastClient } from '../../src/client.js';
import { bindQueryInvalidation, type InvalidationTarget } from '../../src/query-core.js';
import { FakeWebSocket } from '../fake-ws.js';

beforeEach(() => {
  vi.useFakeTimers();
  FakeWebSocket.reset();
});
afterEach(() => vi.useRealTimers());

function openClient(): BroadcastClient {
  const client = new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket });
  client.connect();
  FakeWebSocket.last.welcome();
  return client;
}

describe('bindQueryInvalidation from query-core', () => {
  it('treats keys TanStack hashes alike as one (object keys in any order), and others apart', async () => {
    const a: InvalidationTarget = ['orders', { status: 'open', page: 1 }];
    const sameAsA: InvalidationTarget = ['orders', { page: 1, status: 'open' }];
    const other: InvalidationTarget = ['orders', { page: 2, status: 'open' }];
    // The premise, by TanStack's own hash.
    expect(hashKey(a)).toBe(hashKey(sameAsA));
    expect(hashKey(a)).not.toBe(hashKey(other));

    const client = openClient();
    const invalidated: unknown[] = [];
    const queryClient = new QueryClient();
    vi.spyOn(queryClient, 'invalidateQueries').mockImplementation(async (filters) => {
      invalidated.push(filters?.queryKey);
    });
    const off = bindQueryInvalidation(client, queryClient, { channel: 'order', queryKey: () => [a, sameAsA, other] });
    FakeWebSocket.last.serverSend({ type: 'subscribed', channels: ['order'] });
    await vi.advanceTimersByTimeAsync(100);
    invalidated.length = 0; // the invalidation when the topic went live

    FakeWebSocket.last.signal('order', 'updated', { entity_id: '1', txid: 5 }, 1);
    await vi.advanceTimersByTimeAsync(100);
    expect(invalidated).toEqual([a, other]);
    off();
    client.disconnect();
  });
});
