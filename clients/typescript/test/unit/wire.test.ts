/**
 * What goes on the wire for subscriptions (batching, pacing), the status of
 * each topic, and the resume position across reconnects.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BroadcastClient, type TopicStatus } from '../../src/client.js';
import { FakeWebSocket } from '../fake-ws.js';

/** Ends the current tick: the client's batched changes go out. */
const tick = () => vi.advanceTimersByTimeAsync(0);

function make(opts: Partial<ConstructorParameters<typeof BroadcastClient>[0]> = {}) {
  return new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket, random: () => 0, ...opts });
}

/** A connected client; `welcome` options as the fake takes them. */
function open(opts: Parameters<FakeWebSocket['welcome']>[0] = {}, clientOpts: Parameters<typeof make>[0] = {}) {
  const c = make(clientOpts);
  c.connect();
  const ws = FakeWebSocket.last;
  ws.welcome(opts);
  return { c, ws };
}

const topicsOf = (msgs: any[], kind: 'subscribe' | 'unsubscribe') => msgs.filter((m) => kind in m).flatMap((m) => m[kind]);

beforeEach(() => {
  vi.useFakeTimers();
  FakeWebSocket.reset();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('subscriptions on the wire', () => {
  it('sends the changes of one tick together, in chunks of max_channels_per_message', async () => {
    const { c, ws } = open({ max_channels_per_message: 100 });
    const topics = Array.from({ length: 250 }, (_, i) => `order:${i}`);
    for (const t of topics) c.subscribe(t, () => {});
    expect(ws.sentRaw).toEqual([]); // not before the tick ends
    await tick();
    expect(ws.sentRaw.map((m) => m.subscribe.length)).toEqual([100, 100, 50]);
    expect(topicsOf(ws.sentRaw, 'subscribe')).toEqual(topics);
    c.disconnect();
  });

  it('flush() sends the pending changes now; the end of the tick then sends nothing more', async () => {
    const { c, ws } = open();
    c.subscribe('order:1', () => {});
    c.subscribe('order:2', () => {});
    expect(ws.sentRaw).toEqual([]);
    c.flush();
    expect(ws.sentRaw).toEqual([{ subscribe: ['order:1', 'order:2'] }]);
    await tick();
    expect(ws.sentRaw).toHaveLength(1);
    // A change after the early flush waits for its own end of tick.
    c.subscribe('order:3', () => {});
    expect(ws.sentRaw).toHaveLength(1);
    await tick();
    expect(ws.sentRaw).toEqual([{ subscribe: ['order:1', 'order:2'] }, { subscribe: ['order:3'] }]);
    c.disconnect();
  });

  it('BroadcastClient.flushAll() flushes every client with pending changes (what the fake socket uses)', async () => {
    const a = open();
    const b = open();
    a.c.subscribe('order', () => {});
    b.c.subscribe('item', () => {});
    expect([a.ws.sentRaw, b.ws.sentRaw]).toEqual([[], []]);
    BroadcastClient.flushAll();
    expect([a.ws.sentRaw, b.ws.sentRaw]).toEqual([[{ subscribe: ['order'] }], [{ subscribe: ['item'] }]]);
    await tick();
    expect([a.ws.sentRaw, b.ws.sentRaw]).toEqual([[{ subscribe: ['order'] }], [{ subscribe: ['item'] }]]);
    a.c.disconnect();
    b.c.disconnect();
  });

  it('collapses a subscribe undone in the same tick (React StrictMode mount/unmount/mount)', async () => {
    const { c, ws } = open();
    const off1 = c.subscribe('order:1', () => {});
    off1();
    c.subscribe('order:1', () => {}); // StrictMode mounts again
    const off2 = c.subscribe('order:2', () => {});
    off2(); // mounted and unmounted for good
    await tick();
    expect(ws.sentRaw).toEqual([{ subscribe: ['order:1'] }]);
    // A held topic dropped and taken again within a tick: nothing at all.
    ws.serverSend({ type: 'subscribed', channels: ['order:1'] });
    const offs = [c.subscribe('order:1', () => {})];
    c.subscribedTopics; // no effect
    offs[0]!();
    await tick();
    expect(ws.sentRaw).toHaveLength(1);
    c.disconnect();
  });

  it('never sends more than 80% of max_messages_per_second in any second', async () => {
    const { c, ws } = open({ max_channels_per_message: 1, max_messages_per_second: 10 });
    const times: number[] = [];
    const send = ws.send.bind(ws);
    ws.send = (data: string) => {
      times.push(Date.now());
      send(data);
    };
    for (let i = 0; i < 20; i++) c.subscribe(`order:${i}`, () => {});
    await tick();
    expect(ws.sentRaw).toHaveLength(8);
    await vi.advanceTimersByTimeAsync(3000);
    expect(topicsOf(ws.sentRaw, 'subscribe')).toHaveLength(20);
    for (const t of times) expect(times.filter((u) => u >= t && u < t + 1000).length).toBeLessThanOrEqual(8);
    c.disconnect();
  });

  it('counts auth messages in the rate', async () => {
    let n = 0;
    const c = make({ getToken: async () => `tok${++n}` });
    for (let i = 0; i < 5; i++) c.subscribe(`order:${i}`, () => {});
    c.connect();
    const ws = FakeWebSocket.last;
    ws.welcome({ auth: 'required', max_channels_per_message: 1, max_messages_per_second: 5 });
    await tick();
    ws.serverSend({ type: 'authenticated', expires_at: 1 });
    // 4 a second: the auth message and 3 subscribes, then the other 2.
    expect(ws.sentRaw).toHaveLength(4);
    await vi.advanceTimersByTimeAsync(1000);
    expect(ws.sentRaw).toHaveLength(6);
    c.disconnect();
  });
});

describe('topic status', () => {
  it('goes pending → live on the ack, and pending again while reconnecting', async () => {
    const { c, ws } = open();
    const seen: Array<[string, TopicStatus]> = [];
    const off = c.onTopicStatus((t, s) => seen.push([t, s]));
    c.subscribe('order', () => {});
    expect(c.topicStatus('order')).toBe('pending');
    await tick();
    ws.serverSend({ type: 'subscribed', channels: ['order'] });
    expect(c.topicStatus('order')).toBe('live');
    ws.serverClose(1006);
    expect(c.topicStatus('order')).toBe('pending');
    await tick();
    FakeWebSocket.last.welcome();
    FakeWebSocket.last.serverSend({ type: 'subscribed', channels: ['order'] });
    expect(seen).toEqual([
      ['order', 'pending'],
      ['order', 'live'],
      ['order', 'pending'],
      ['order', 'live'],
    ]);
    off();
    expect(c.topicStatus('nothing')).toBeUndefined();
    c.disconnect();
  });

  it('forbidden: not retried (not even after a reconnect) until subscribed again or the token changes', async () => {
    let token = 'a';
    const c = make({ getToken: () => token });
    c.subscribe('secret', () => {});
    c.subscribe('order', () => {});
    c.connect();
    let ws = FakeWebSocket.last;
    ws.welcome({ auth: 'required' });
    await tick();
    ws.serverSend({ type: 'authenticated', expires_at: 1 });
    expect(ws.sent).toEqual([{ auth: 'a' }, { subscribe: ['secret', 'order'] }]);
    ws.serverSend({ type: 'error', code: 'forbidden', message: 'no', topics: ['secret'] });
    ws.serverSend({ type: 'subscribed', channels: ['order'] });
    expect(c.topicStatus('secret')).toBe('forbidden');
    expect(c.topicStatus('order')).toBe('live');
    await vi.advanceTimersByTimeAsync(120_000);
    expect(ws.sent).toHaveLength(2);
    // Reconnect with the same token: still not asked for.
    ws.serverClose(1006);
    await tick();
    ws = FakeWebSocket.last;
    ws.welcome({ auth: 'required' });
    await tick();
    ws.serverSend({ type: 'authenticated', expires_at: 1 });
    expect(topicsOf(ws.sent, 'subscribe')).toEqual(['order']);
    // The app subscribes again: asked for again.
    const off = c.subscribe('secret', () => {});
    expect(c.topicStatus('secret')).toBe('pending');
    await tick();
    expect(ws.sent.at(-1)).toEqual({ subscribe: ['secret'] });
    ws.serverSend({ type: 'error', code: 'forbidden', message: 'no', topics: ['secret'] });
    off();
    expect(c.topicStatus('secret')).toBe('forbidden'); // the first handler still holds it
    // A new token (auth_expiring refresh): asked for under it.
    token = 'b';
    ws.serverSend({ type: 'auth_expiring', expires_at: 2 });
    await tick();
    expect(ws.sent.slice(-2)).toEqual([{ auth: 'b' }, { subscribe: ['secret'] }]);
    expect(c.topicStatus('secret')).toBe('pending');
    c.disconnect();
  });

  it('revoked: kept off the wire, reported, and not retried', async () => {
    const { c, ws } = open();
    c.subscribe('order', () => {});
    await tick();
    ws.serverSend({ type: 'subscribed', channels: ['order'] });
    ws.serverSend({ type: 'unsubscribed', channels: ['order'], reason: 'revoked' });
    expect(c.topicStatus('order')).toBe('revoked');
    await vi.advanceTimersByTimeAsync(120_000);
    expect(ws.sent).toEqual([{ subscribe: ['order'] }]);
    c.disconnect();
  });

  it('dropped with reason authorization_unavailable: retrying, then asked for again', async () => {
    const { c, ws } = open({}, { backoff: { baseMs: 100, maxMs: 1000 } });
    c.subscribe('order', () => {});
    await tick();
    ws.serverSend({ type: 'subscribed', channels: ['order'] });
    ws.serverSend({ type: 'unsubscribed', channels: ['order'], reason: 'authorization_unavailable' });
    expect(c.topicStatus('order')).toBe('retrying');
    await vi.advanceTimersByTimeAsync(99);
    expect(ws.sent).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(ws.sent).toEqual([{ subscribe: ['order'] }, { subscribe: ['order'] }]);
    expect(c.topicStatus('order')).toBe('pending');
    ws.serverSend({ type: 'subscribed', channels: ['order'] });
    expect(c.topicStatus('order')).toBe('live');
    c.disconnect();
  });

  it('a topic the server dropped while live gets a resync once live again (the signals in between were not sent)', async () => {
    const { c, ws } = open({}, { backoff: { baseMs: 100, maxMs: 1000 } });
    const h = vi.fn();
    const other = vi.fn();
    c.subscribe('order:1', h);
    c.subscribe('order:2', other);
    await tick();
    ws.serverSend({ type: 'subscribed', channels: ['order:1', 'order:2'] });
    ws.serverSend({ type: 'unsubscribed', channels: ['order:1'], reason: 'authorization_unavailable' });
    await vi.advanceTimersByTimeAsync(100);
    expect(h).not.toHaveBeenCalled();
    ws.serverSend({ type: 'subscribed', channels: ['order:1'] });
    expect(h).toHaveBeenCalledTimes(1);
    expect(h.mock.calls[0][0]).toEqual({ channel: 'order', event: 'resync', payload: { reason: 'resubscribed' }, resync: true });
    expect(other).not.toHaveBeenCalled();
    // Revoked, then allowed again by the app subscribing anew: a resync as well.
    ws.serverSend({ type: 'unsubscribed', channels: ['order:2'], reason: 'revoked' });
    c.subscribe('order:2', () => {});
    await tick();
    ws.serverSend({ type: 'subscribed', channels: ['order:2'] });
    expect(other).toHaveBeenCalledWith(expect.objectContaining({ event: 'resync', resync: true }));
    // An ordinary ack (first subscription) does not.
    ws.serverSend({ type: 'subscribed', channels: ['order:1'] });
    expect(h).toHaveBeenCalledTimes(1);
    c.disconnect();
  });

  it('error authorization_unavailable (no topics) retries the message it answers, with a growing capped backoff', async () => {
    const { c, ws } = open({}, { backoff: { baseMs: 100, maxMs: 400 }, random: () => 1 });
    c.subscribe('a', () => {});
    await tick();
    c.subscribe('b', () => {});
    await tick();
    expect(ws.sent).toEqual([{ subscribe: ['a'] }, { subscribe: ['b'] }]);
    ws.serverSend({ type: 'error', code: 'authorization_unavailable', message: 'try again' });
    expect(c.topicStatus('a')).toBe('retrying');
    expect(c.topicStatus('b')).toBe('pending');
    ws.serverSend({ type: 'error', code: 'authorization_unavailable', message: 'try again' });
    expect(c.topicStatus('b')).toBe('retrying');
    const resent: number[] = [];
    const t0 = Date.now();
    for (let i = 0; i < 4; i++) {
      const n = ws.sent.length;
      while (ws.sent.length === n) await vi.advanceTimersByTimeAsync(10);
      resent.push(Date.now());
      expect(ws.sent.at(-1)).toEqual({ subscribe: ['a', 'b'] });
      ws.serverSend({ type: 'error', code: 'authorization_unavailable', message: 'try again' });
    }
    // baseMs + full-jitter backoff (random() = 1): 100+100, 100+200, 100+400, 100+400 (capped)
    const gaps = resent.map((t, i) => t - (i === 0 ? t0 : resent[i - 1]!));
    expect(gaps).toEqual([200, 300, 500, 500]);
    ws.serverSend({ type: 'subscribed', channels: ['a', 'b'] });
    expect([c.topicStatus('a'), c.topicStatus('b')]).toEqual(['live', 'live']);
    c.disconnect();
  });

  it('rate_limited: every unanswered message is asked for again; an answer skipping a message shows it was dropped', async () => {
    const { c, ws } = open();
    c.subscribe('a', () => {});
    await tick();
    c.subscribe('b', () => {});
    await tick();
    c.subscribe('c', () => {});
    await tick();
    // The server answers the second message, never the first: it was dropped.
    ws.serverSend({ type: 'subscribed', channels: ['b'] });
    expect(c.topicStatus('a')).toBe('retrying');
    expect(c.topicStatus('b')).toBe('live');
    ws.serverSend({ type: 'error', code: 'rate_limited', message: 'slow down', dropped: 2 });
    expect(c.topicStatus('c')).toBe('retrying');
    await vi.advanceTimersByTimeAsync(500);
    expect(ws.sent.slice(3)).toEqual([{ subscribe: ['a', 'c'] }]);
    ws.serverSend({ type: 'subscribed', channels: ['a', 'c'] });
    expect(c.topicStatus('a')).toBe('live');
    expect(c.topicStatus('c')).toBe('live');
    c.disconnect();
  });

  it('a late answer for a topic dropped meanwhile is undone; one whose unsubscribe is on the way is not', async () => {
    const { c, ws } = open();
    const offA = c.subscribe('a', () => {});
    const offB = c.subscribe('b', () => {});
    await tick();
    ws.serverSend({ type: 'error', code: 'rate_limited', message: 'slow down', dropped: 1 }); // a false alarm
    offA(); // retrying, so nothing to unsubscribe as far as the client knows
    await tick();
    expect(ws.sent).toEqual([{ subscribe: ['a', 'b'] }]);
    ws.serverSend({ type: 'subscribed', channels: ['a', 'b'] }); // it was applied after all
    await tick();
    expect(ws.sent.slice(1)).toEqual([{ unsubscribe: ['a'] }]);
    offB();
    await tick();
    expect(ws.sent.slice(2)).toEqual([{ unsubscribe: ['b'] }]);
    ws.serverSend({ type: 'subscribed', channels: ['b'] }); // an answer to an earlier message: its unsubscribe follows
    await tick();
    expect(ws.sent).toHaveLength(3);
    c.disconnect();
  });

  it('an unsubscribe the server dropped is sent again', async () => {
    const { c, ws } = open();
    const off = c.subscribe('a', () => {});
    await tick();
    ws.serverSend({ type: 'subscribed', channels: ['a'] });
    off();
    await tick();
    expect(ws.sent.at(-1)).toEqual({ unsubscribe: ['a'] });
    ws.serverSend({ type: 'error', code: 'rate_limited', message: 'slow down', dropped: 1 });
    await tick();
    expect(ws.sent.slice(1)).toEqual([{ unsubscribe: ['a'] }, { unsubscribe: ['a'] }]);
    c.disconnect();
  });

  it('a topic the server would refuse (and with it its whole message) is forbidden without being sent', async () => {
    const { c, ws } = open();
    c.subscribe('a b', () => {});
    c.subscribe(`order:${'x'.repeat(257)}`, () => {});
    c.subscribe('order:a\nb', () => {});
    c.subscribe(`order:${'é'.repeat(128)}`, () => {}); // 256 bytes: allowed
    c.subscribe('order:1', () => {});
    await tick();
    expect(ws.sent).toEqual([{ subscribe: [`order:${'é'.repeat(128)}`, 'order:1'] }]);
    expect(c.topicStatus('a b')).toBe('forbidden');
    expect(c.topicStatus('order:a\nb')).toBe('forbidden');
    expect(c.topicStatus(`order:${'x'.repeat(257)}`)).toBe('forbidden');
    c.disconnect();
  });
});

describe('resume position', () => {
  async function reconnect(c: BroadcastClient, welcome: Parameters<FakeWebSocket['welcome']>[0]) {
    FakeWebSocket.last.serverClose(1006);
    await tick();
    const ws = FakeWebSocket.last;
    ws.welcome(welcome);
    expect(c.state).toBe('open');
    return ws;
  }

  it('adopts the new epoch after a server restart (resume_unavailable)', async () => {
    const { c, ws } = open({ epoch: 'old', seq: 5 });
    c.subscribe('order', () => {});
    await tick();
    ws.signal('order', 'created', { entity_id: '1' }, 7, 'old');
    const ws2 = await reconnect(c, { epoch: 'new', seq: 3 });
    expect(ws2.sent).toEqual([{ subscribe: ['order'], resume: { epoch: 'old', seq: 7 } }]);
    ws2.serverSend({ type: 'subscribed', channels: ['order'] });
    ws2.signal('order', 'resync', { reason: 'resume_unavailable' });
    ws2.serverSend({ type: 'heartbeat' });
    expect(c.position).toEqual({ epoch: 'new', seq: 3 });
    const ws3 = await reconnect(c, { epoch: 'new', seq: 4 });
    expect(ws3.sent).toEqual([{ subscribe: ['order'], resume: { epoch: 'new', seq: 3 } }]);
    c.disconnect();
  });

  it('adopts the welcome of a new epoch at once when there is nothing to resume', async () => {
    const { c, ws } = open({ epoch: 'old', seq: 5 });
    c.subscribe('x y', () => {}); // held, but never on the wire
    await tick();
    ws.signal('order', 'created', {}, 9, 'old');
    await reconnect(c, { epoch: 'new', seq: 2 });
    expect(c.position).toEqual({ epoch: 'new', seq: 2 });
    c.disconnect();
  });

  it('moves a quiet position up to the welcome once the resume and its replay are through', async () => {
    const { c, ws } = open({ epoch: 'e', seq: 10 });
    c.subscribe('order', () => {});
    await tick();
    ws.serverSend({ type: 'subscribed', channels: ['order'] });
    const ws2 = await reconnect(c, { epoch: 'e', seq: 50 });
    expect(ws2.sent).toEqual([{ subscribe: ['order'], resume: { epoch: 'e', seq: 10 } }]);
    expect(c.position).toEqual({ epoch: 'e', seq: 10 });
    ws2.serverSend({ type: 'subscribed', channels: ['order'] });
    ws2.signal('order', 'created', { entity_id: '1' }, 12, 'e'); // replayed
    expect(c.position).toEqual({ epoch: 'e', seq: 10 }); // the replay may not be through yet
    ws2.serverSend({ type: 'heartbeat' }); // after the replay, in order
    expect(c.position).toEqual({ epoch: 'e', seq: 50 });
    ws2.signal('order', 'created', { entity_id: '2' }, 51, 'e');
    expect(c.position).toEqual({ epoch: 'e', seq: 51 });
    const ws3 = await reconnect(c, { epoch: 'e', seq: 60 });
    expect(ws3.sent).toEqual([{ subscribe: ['order'], resume: { epoch: 'e', seq: 51 } }]);
    c.disconnect();
  });

  it('asks for an empty unsubscribe after the last resume ack: its answer follows the replay and moves the position', async () => {
    const { c, ws } = open({ epoch: 'e', seq: 10 });
    c.subscribe('order', () => {});
    await tick();
    const ws2 = await reconnect(c, { epoch: 'e', seq: 50 });
    ws2.serverSend({ type: 'subscribed', channels: ['order'] });
    await tick();
    expect(ws2.sent).toEqual([{ subscribe: ['order'], resume: { epoch: 'e', seq: 10 } }, { unsubscribe: [] }]);
    ws2.signal('order', 'created', { entity_id: '1' }, 55, 'e'); // replayed
    expect(c.position).toEqual({ epoch: 'e', seq: 10 });
    ws2.serverSend({ type: 'unsubscribed', channels: [] });
    expect(c.position).toEqual({ epoch: 'e', seq: 55 });
    expect(c.topicStatus('order')).toBe('live');
    void ws;
    c.disconnect();
  });

  it("moves a quiet connection's position to a heartbeat's, and resumes from there", async () => {
    const { c, ws } = open({ epoch: 'e', seq: 10 });
    c.subscribe('order:1', () => {});
    await tick();
    ws.serverSend({ type: 'subscribed', channels: ['order:1'] });
    // Signals for other entities went to others; the heartbeat says so.
    ws.serverSend({ type: 'heartbeat', epoch: 'e', seq: 90 });
    expect(c.position).toEqual({ epoch: 'e', seq: 90 });
    // A heartbeat of no position (the server owes this connection a resync) moves nothing.
    ws.serverSend({ type: 'heartbeat' });
    expect(c.position).toEqual({ epoch: 'e', seq: 90 });
    const ws2 = await reconnect(c, { epoch: 'e', seq: 95 });
    expect(ws2.sent).toEqual([{ subscribe: ['order:1'], resume: { epoch: 'e', seq: 90 } }]);
    // While that resume is under way, a heartbeat cannot move the point:
    // the resume is not through until its ack (and the replay before it).
    ws2.serverSend({ type: 'heartbeat', epoch: 'e', seq: 99 });
    expect(c.position).toEqual({ epoch: 'e', seq: 90 });
    ws2.serverSend({ type: 'subscribed', channels: ['order:1'] });
    ws2.serverSend({ type: 'heartbeat', epoch: 'e', seq: 100 });
    expect(c.position).toEqual({ epoch: 'e', seq: 100 });
    c.disconnect();
  });

  it('keeps a resume position further than a node that runs behind', async () => {
    const { c, ws } = open({ epoch: 'wal.x', seq: 'B' });
    c.subscribe('order', () => {});
    await tick();
    ws.signal('order', 'created', { entity_id: '1' }, 'C', 'wal.x');
    const ws2 = await reconnect(c, { epoch: 'wal.x', seq: 'A' });
    ws2.serverSend({ type: 'subscribed', channels: ['order'] });
    ws2.serverSend({ type: 'heartbeat' });
    expect(c.position).toEqual({ epoch: 'wal.x', seq: 'C' });
    c.disconnect();
  });

  it('resumes every chunk from the same position and moves it only once every chunk is acknowledged', async () => {
    const { c, ws } = open({ epoch: 'e', seq: 10, max_channels_per_message: 2 });
    for (const t of ['a', 'b', 'c']) c.subscribe(t, () => {});
    await tick();
    ws.serverSend({ type: 'subscribed', channels: ['a', 'b'] });
    ws.serverSend({ type: 'subscribed', channels: ['c'] });
    ws.signal('a', 'created', {}, 20, 'e');
    const ws2 = await reconnect(c, { epoch: 'e', seq: 30, max_channels_per_message: 2 });
    const resume = { epoch: 'e', seq: 20 };
    expect(ws2.sent).toEqual([
      { subscribe: ['a', 'b'], resume },
      { subscribe: ['c'], resume },
    ]);
    // The first chunk is answered and replayed; the connection drops before the second is.
    ws2.serverSend({ type: 'subscribed', channels: ['a', 'b'] });
    ws2.signal('a', 'created', {}, 28, 'e');
    ws2.serverSend({ type: 'heartbeat' });
    expect(c.position).toEqual(resume);
    const ws3 = await reconnect(c, { epoch: 'e', seq: 31, max_channels_per_message: 2 });
    // 'c' missed what came after 20: all of them resume from there again.
    expect(ws3.sent).toEqual([
      { subscribe: ['a', 'b'], resume },
      { subscribe: ['c'], resume },
    ]);
    ws3.serverSend({ type: 'subscribed', channels: ['a', 'b'] });
    ws3.serverSend({ type: 'subscribed', channels: ['c'] });
    ws3.signal('c', 'created', {}, 25, 'e');
    ws3.serverSend({ type: 'heartbeat' });
    expect(c.position).toEqual({ epoch: 'e', seq: 31 });
    c.disconnect();
  });

  it('a resume topic refused for now is resumed from the same position when retried', async () => {
    const { c } = open({ epoch: 'e', seq: 10 });
    c.subscribe('a', () => {});
    await tick();
    const ws2 = await reconnect(c, { epoch: 'e', seq: 30 });
    ws2.serverSend({ type: 'error', code: 'authorization_unavailable', message: 'try again' });
    ws2.serverSend({ type: 'heartbeat' });
    expect(c.position).toEqual({ epoch: 'e', seq: 10 });
    await vi.advanceTimersByTimeAsync(1000);
    expect(ws2.sent).toEqual([
      { subscribe: ['a'], resume: { epoch: 'e', seq: 10 } },
      { subscribe: ['a'], resume: { epoch: 'e', seq: 10 } },
    ]);
    ws2.serverSend({ type: 'subscribed', channels: ['a'] });
    ws2.serverSend({ type: 'heartbeat' });
    expect(c.position).toEqual({ epoch: 'e', seq: 30 });
    c.disconnect();
  });
});
