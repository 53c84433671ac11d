/**
 * The welcome's `max_subscriptions`: the client never sends a subscribe that
 * would take the connection past it; topics past it are `over_limit`,
 * reported once, and subscribed (oldest first) when room frees up.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BroadcastClient, type BroadcastError, type BroadcastSignal, type TopicStatus } from '../../src/client.js';
import { FakeWebSocket } from '../fake-ws.js';

const tick = () => vi.advanceTimersByTimeAsync(0);

function open(welcome: Parameters<FakeWebSocket['welcome']>[0] = {}) {
  const c = new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket, random: () => 0 });
  const errors: BroadcastError[] = [];
  c.onError((e) => errors.push(e));
  c.connect();
  const ws = FakeWebSocket.last;
  ws.welcome(welcome);
  return { c, ws, errors };
}

async function reconnect(c: BroadcastClient, welcome: Parameters<FakeWebSocket['welcome']>[0]) {
  FakeWebSocket.last.serverClose(1006);
  await tick();
  const ws = FakeWebSocket.last;
  ws.welcome(welcome);
  expect(c.state).toBe('open');
  return ws;
}

const limitErrors = (errors: BroadcastError[]) => errors.filter((e) => e.kind === 'limit');
const statuses = (c: BroadcastClient, topics: string[]) => topics.map((t) => c.topicStatus(t));

beforeEach(() => {
  vi.useFakeTimers();
  FakeWebSocket.reset();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('max_subscriptions', () => {
  it('sends only the topics within the limit, in the order asked; the rest are over_limit, reported once, never retried', async () => {
    const { c, ws, errors } = open({ max_subscriptions: 5, max_channels_per_message: 2 });
    const topics = ['t0', 't1', 't2', 't3', 't4', 't5', 't6', 't7'];
    for (const t of topics) c.subscribe(t, () => {});
    await tick();
    expect(ws.sent).toEqual([{ subscribe: ['t0', 't1'] }, { subscribe: ['t2', 't3'] }, { subscribe: ['t4'] }]);
    expect(statuses(c, topics)).toEqual([...Array(5).fill('pending'), 'over_limit', 'over_limit', 'over_limit']);
    expect(limitErrors(errors)).toEqual([
      expect.objectContaining({ kind: 'limit', code: 'subscription_limit', topics: ['t5', 't6', 't7'] }),
    ]);
    ws.serverSend({ type: 'subscribed', channels: ['t0', 't1'] });
    ws.serverSend({ type: 'subscribed', channels: ['t2', 't3'] });
    ws.serverSend({ type: 'subscribed', channels: ['t4'] });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(ws.sent).toHaveLength(3);
    expect(statuses(c, topics)).toEqual([...Array(5).fill('live'), 'over_limit', 'over_limit', 'over_limit']);
    expect(limitErrors(errors)).toHaveLength(1);
    c.disconnect();
  });

  it('subscribes waiting topics oldest first when the app unsubscribes others', async () => {
    const { c, ws, errors } = open({ max_subscriptions: 3 });
    const off = new Map(['a', 'b', 'c', 'd', 'e'].map((t) => [t, c.subscribe(t, () => {})]));
    await tick();
    ws.serverSend({ type: 'subscribed', channels: ['a', 'b', 'c'] });
    expect(statuses(c, ['d', 'e'])).toEqual(['over_limit', 'over_limit']);
    // A topic asked for later waits behind them.
    c.subscribe('f', () => {});
    await tick();
    expect(c.topicStatus('f')).toBe('over_limit');
    expect(limitErrors(errors).map((e) => e.topics)).toEqual([['d', 'e'], ['f']]);
    const seen: Array<[string, TopicStatus]> = [];
    c.onTopicStatus((t, s) => seen.push([t, s]));
    off.get('a')!();
    await tick();
    expect(ws.sent.slice(1)).toEqual([{ unsubscribe: ['a'] }, { subscribe: ['d'] }]);
    off.get('b')!();
    off.get('c')!();
    await tick();
    expect(ws.sent.slice(3)).toEqual([{ unsubscribe: ['b', 'c'] }, { subscribe: ['e', 'f'] }]);
    ws.serverSend({ type: 'unsubscribed', channels: ['a'] });
    ws.serverSend({ type: 'subscribed', channels: ['d'] });
    ws.serverSend({ type: 'unsubscribed', channels: ['b', 'c'] });
    ws.serverSend({ type: 'subscribed', channels: ['e', 'f'] });
    expect(statuses(c, ['d', 'e', 'f'])).toEqual(['live', 'live', 'live']);
    expect(seen).toEqual([
      ['d', 'pending'],
      ['e', 'pending'],
      ['f', 'pending'],
      ['d', 'live'],
      ['e', 'live'],
      ['f', 'live'],
    ]);
    expect(limitErrors(errors)).toHaveLength(2);
    c.disconnect();
  });

  it('after a reconnect the resume chunks stay within the limit; a topic past it gives up its resume and gets a resync once live', async () => {
    const { c, ws, errors } = open({ epoch: 'e', seq: 10, max_subscriptions: 3, max_channels_per_message: 2 });
    const got: BroadcastSignal[] = [];
    const off = new Map(['a', 'b', 'c', 'd'].map((t) => [t, c.subscribe(t, (s) => got.push(s))]));
    await tick();
    ws.serverSend({ type: 'subscribed', channels: ['a', 'b'] });
    ws.serverSend({ type: 'subscribed', channels: ['c'] });
    expect(c.topicStatus('d')).toBe('over_limit');
    ws.signal('a', 'created', {}, 20, 'e');
    // The new connection allows fewer topics.
    const ws2 = await reconnect(c, { epoch: 'e', seq: 30, max_subscriptions: 2, max_channels_per_message: 2 });
    const resume = { epoch: 'e', seq: 20 };
    expect(ws2.sent).toEqual([{ subscribe: ['a', 'b'], resume }]);
    expect(statuses(c, ['a', 'b', 'c', 'd'])).toEqual(['pending', 'pending', 'over_limit', 'over_limit']);
    expect(limitErrors(errors).map((e) => e.topics)).toEqual([['d'], ['c']]);
    // 'c' does not hold the position back.
    ws2.serverSend({ type: 'subscribed', channels: ['a', 'b'] });
    await tick();
    expect(ws2.sent.slice(1)).toEqual([{ unsubscribe: [] }]);
    ws2.serverSend({ type: 'unsubscribed', channels: [] });
    expect(c.position).toEqual({ epoch: 'e', seq: 30 });
    // Room frees up: 'c' is subscribed (no resume: the position moved on) and told what it missed.
    got.length = 0;
    off.get('a')!();
    await tick();
    expect(ws2.sent.slice(2)).toEqual([{ unsubscribe: ['a'] }, { subscribe: ['c'] }]);
    ws2.serverSend({ type: 'unsubscribed', channels: ['a'] });
    ws2.serverSend({ type: 'subscribed', channels: ['c'] });
    expect(c.topicStatus('c')).toBe('live');
    expect(got).toEqual([expect.objectContaining({ channel: 'c', resync: true })]);
    // A connection allowing more takes the waiting ones at once.
    const ws3 = await reconnect(c, { epoch: 'e', seq: 40, max_subscriptions: 10, max_channels_per_message: 2 });
    expect(ws3.sent).toEqual([{ subscribe: ['b', 'c'], resume: { epoch: 'e', seq: 30 } }, { subscribe: ['d'] }]);
    expect(c.topicStatus('d')).toBe('pending');
    c.disconnect();
  });

  it('a subscription_limit refusal puts the refused topics over_limit (no retry loop) and lowers the limit to what the server held', async () => {
    // The welcome says 10; the server takes 4.
    const { c, ws, errors } = open({ max_subscriptions: 10, max_channels_per_message: 2 });
    const off = new Map(['a', 'b', 'c', 'd', 'e', 'f'].map((t) => [t, c.subscribe(t, () => {})]));
    await tick();
    expect(ws.sent).toEqual([{ subscribe: ['a', 'b'] }, { subscribe: ['c', 'd'] }, { subscribe: ['e', 'f'] }]);
    ws.serverSend({ type: 'subscribed', channels: ['a', 'b'] });
    ws.serverSend({ type: 'subscribed', channels: ['c', 'd'] });
    ws.serverSend({ type: 'error', code: 'subscription_limit', message: 'this would hold 6 subscriptions; the limit per connection is 4' });
    expect(statuses(c, ['e', 'f'])).toEqual(['over_limit', 'over_limit']);
    expect(limitErrors(errors)).toEqual([expect.objectContaining({ topics: ['e', 'f'] })]);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(ws.sent).toHaveLength(3);
    // One slot frees up: one topic, the oldest, goes.
    off.get('a')!();
    await tick();
    expect(ws.sent.slice(3)).toEqual([{ unsubscribe: ['a'] }, { subscribe: ['e'] }]);
    ws.serverSend({ type: 'unsubscribed', channels: ['a'] });
    ws.serverSend({ type: 'subscribed', channels: ['e'] });
    expect(statuses(c, ['e', 'f'])).toEqual(['live', 'over_limit']);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(ws.sent).toHaveLength(5);
    c.disconnect();
  });

  it('without max_subscriptions in the welcome, the server default (1000) applies', async () => {
    const { c, ws } = open();
    for (let i = 0; i < 1003; i++) c.subscribe(`order:${i}`, () => {});
    await tick();
    expect(ws.sent.flatMap((m) => m.subscribe)).toHaveLength(1000);
    expect(c.topicStatus('order:999')).toBe('pending');
    expect(c.topicStatus('order:1000')).toBe('over_limit');
    c.disconnect();
  });
});
