import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  BroadcastClient,
  backoffDelay,
  getBroadcastClient,
  initBroadcast,
  parseTopic,
  resetBroadcast,
  subscribeToBroadcast,
  topicOf,
  type BroadcastError,
  type BroadcastSignal,
  type ConnectionState,
} from '../../src/client.js';
import { FakeWebSocket } from '../fake-ws.js';

const flush = () => vi.advanceTimersByTimeAsync(0);

function make(opts: Partial<ConstructorParameters<typeof BroadcastClient>[0]> = {}) {
  return new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket, ...opts });
}

beforeEach(() => {
  vi.useFakeTimers();
  FakeWebSocket.reset();
});
afterEach(() => {
  resetBroadcast();
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('backoffDelay', () => {
  it('stays within [0, min(max, base·2^attempt)] with full jitter', () => {
    for (let attempt = 0; attempt < 12; attempt++) {
      const ceiling = Math.min(30000, 500 * 2 ** attempt);
      expect(backoffDelay(attempt, {}, () => 0)).toBe(0);
      expect(backoffDelay(attempt, {}, () => 0.999999)).toBeLessThanOrEqual(ceiling);
      expect(backoffDelay(attempt, {}, () => 0.999999)).toBeGreaterThan(ceiling * 0.99);
      for (let i = 0; i < 50; i++) {
        const d = backoffDelay(attempt);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThanOrEqual(ceiling);
      }
    }
  });
  it('is capped at maxMs even for huge attempts and honours custom base', () => {
    expect(backoffDelay(1000, { baseMs: 100, maxMs: 2000 }, () => 0.5)).toBe(1000);
    expect(backoffDelay(3, { baseMs: 100, maxMs: 2000 }, () => 0.5)).toBe(400);
    expect(Number.isFinite(backoffDelay(10_000))).toBe(true);
  });
});

describe('topics', () => {
  it('builds and parses channel:entity topics', () => {
    expect(topicOf('order')).toBe('order');
    expect(topicOf('order', 12)).toBe('order:12');
    expect(parseTopic('order:a:b')).toEqual({ channel: 'order', entityId: 'a:b' });
    expect(parseTopic('order')).toEqual({ channel: 'order' });
  });
});

describe('BroadcastClient', () => {
  it('goes connecting → open → closed and notifies listeners; off() stops notifications', () => {
    const c = make();
    const seen: ConnectionState[] = [];
    const off = c.onStateChange((s) => seen.push(s));
    expect(c.state).toBe('closed');
    c.connect();
    expect(c.state).toBe('connecting');
    FakeWebSocket.last.serverOpen();
    expect(c.state).toBe('connecting'); // not open before the welcome
    FakeWebSocket.last.welcome();
    expect(c.state).toBe('open');
    c.disconnect();
    expect(c.state).toBe('closed');
    expect(FakeWebSocket.last.closedWith?.code).toBe(1000);
    expect(seen).toEqual(['connecting', 'open', 'closed']);
    off();
    c.connect();
    expect(seen).toEqual(['connecting', 'open', 'closed']);
    c.disconnect();
  });

  it('subscribes topics on open and refcounts them on the wire', () => {
    const c = make();
    const a = vi.fn();
    const b = vi.fn();
    const offA = c.subscribe('order', a);
    c.connect();
    const ws = FakeWebSocket.last;
    ws.welcome({ epoch: 'e1', seq: 5 });
    expect(ws.sent).toEqual([{ subscribe: ['order'] }]); // nothing to resume yet: no resume field needed
    const offB = c.subscribe('order', b); // second handler: no wire traffic
    expect(ws.sent).toHaveLength(1);
    const offE = c.subscribe('order:7', vi.fn());
    expect(ws.sent[1]).toEqual({ subscribe: ['order:7'] });
    offA();
    expect(ws.sent).toHaveLength(2); // b still holds "order"
    offA(); // idempotent
    offB();
    expect(ws.sent[2]).toEqual({ unsubscribe: ['order'] });
    offE();
    expect(ws.sent[3]).toEqual({ unsubscribe: ['order:7'] });
    expect(c.subscribedTopics).toEqual([]);
    c.disconnect();
  });

  it('dispatches signals to channel and entity handlers with entityId and txid', () => {
    const c = make();
    const chan = vi.fn();
    const ent = vi.fn();
    const other = vi.fn();
    c.subscribe('order', chan);
    c.subscribe('order:123', ent);
    c.subscribe('order:999', other);
    c.connect();
    const ws = FakeWebSocket.last;
    ws.welcome();
    ws.signal('order', 'item_added', { entity_id: '123', txid: 7561, table: 'order_items', op: 'INSERT' }, 1);
    const expected: Partial<BroadcastSignal> = { channel: 'order', event: 'item_added', entityId: '123', txid: 7561, resync: false };
    expect(chan).toHaveBeenCalledWith(expect.objectContaining(expected));
    expect(ent).toHaveBeenCalledWith(expect.objectContaining(expected));
    expect(other).not.toHaveBeenCalled();
    // channel-wide (no entity_id): every handler of the channel
    ws.signal('order', 'updated', { txid: 7562, rows: 100000 }, 2);
    expect(other).toHaveBeenCalledTimes(1);
    expect(other.mock.calls[0][0].entityId).toBeUndefined();
    // a replay from a second resume message may carry an older seq: delivered
    ws.signal('order', 'updated', { txid: 7500 }, 1);
    expect(chan).toHaveBeenCalledTimes(3);
    c.disconnect();
  });

  it('delivers resync to every handler of the channel (entity handlers too) with resync: true', () => {
    const c = make();
    const chan = vi.fn();
    const ent1 = vi.fn();
    const ent2 = vi.fn();
    const elsewhere = vi.fn();
    c.subscribe('order', chan);
    c.subscribe('order:1', ent1);
    c.subscribe('order:2', ent2);
    c.subscribe('contact', elsewhere);
    c.connect();
    FakeWebSocket.last.welcome();
    FakeWebSocket.last.signal('order', 'resync', { reason: 'listener_reconnected' });
    for (const h of [chan, ent1, ent2]) {
      expect(h).toHaveBeenCalledTimes(1);
      expect(h.mock.calls[0][0]).toMatchObject({ channel: 'order', event: 'resync', resync: true });
      expect(h.mock.calls[0][0].entityId).toBeUndefined();
    }
    expect(elsewhere).not.toHaveBeenCalled();
    c.disconnect();
  });

  it('reconnects with backoff and resubscribes every topic with resume from the last epoch/seq', async () => {
    const c = make({ random: () => 1 });
    c.subscribe('order', vi.fn());
    c.subscribe('order:5', vi.fn());
    c.connect();
    const ws1 = FakeWebSocket.last;
    ws1.welcome({ epoch: 'aa', seq: 40 });
    ws1.signal('order', 'created', { entity_id: '5', txid: 1 }, 42, 'aa');
    ws1.serverClose(1006);
    expect(c.state).toBe('connecting');
    expect(FakeWebSocket.instances).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(499);
    expect(FakeWebSocket.instances).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1); // attempt 0: up to 500 ms
    expect(FakeWebSocket.instances).toHaveLength(2);
    const ws2 = FakeWebSocket.last;
    ws2.welcome({ epoch: 'aa', seq: 50 });
    expect(ws2.sent).toEqual([{ subscribe: ['order', 'order:5'], resume: { epoch: 'aa', seq: 42 } }]);
    expect(c.state).toBe('open');
    c.disconnect();
  });

  it('keeps the newest string seq of a WAL epoch and resumes from it with the very same string', async () => {
    const wal = 'wal.7301234567890123456.1.app.pgbroadcast';
    const c = make({ random: () => 0 });
    const h = vi.fn();
    c.subscribe('order', h);
    c.connect();
    const ws1 = FakeWebSocket.last;
    ws1.welcome({ epoch: wal, seq: '00000000016B3748.0000000200000000' });
    expect(c.position).toEqual({ epoch: wal, seq: '00000000016B3748.0000000200000000' });
    ws1.signal('order', 'created', { entity_id: '5' }, '00000000016B3790.0000000000000000', wal);
    expect(h.mock.calls[0][0]).toMatchObject({ seq: '00000000016B3790.0000000000000000', epoch: wal });
    expect(c.position).toEqual({ epoch: wal, seq: '00000000016B3790.0000000000000000' });
    // Text order, not the order of numbers read from a prefix: A comes after 9.
    ws1.signal('order', 'updated', { entity_id: '5' }, '00000000016B37A0.0000000000000000', wal);
    // A replay from a second resume message may carry an older seq: delivered, not the resume point.
    ws1.signal('order', 'updated', { entity_id: '6' }, '00000000016B3790.0000000100000000', wal);
    expect(h).toHaveBeenCalledTimes(3);
    expect(c.position).toEqual({ epoch: wal, seq: '00000000016B37A0.0000000000000000' });
    ws1.serverClose(1006);
    await flush();
    const ws2 = FakeWebSocket.last;
    expect(ws2).not.toBe(ws1);
    ws2.welcome({ epoch: wal, seq: '00000000016B4000.0000000000000000' });
    expect(ws2.sent).toEqual([{ subscribe: ['order'], resume: { epoch: wal, seq: '00000000016B37A0.0000000000000000' } }]);
    expect(typeof ws2.sent[0].resume.seq).toBe('string');
    c.disconnect();
  });

  it('compares numbers as numbers, takes any seq of a new epoch, and does not order a number against a string', async () => {
    const wal = 'wal.7301234567890123456.1.app.pgbroadcast';
    const c = make({ random: () => 0 });
    c.subscribe('order', vi.fn());
    c.connect();
    const ws1 = FakeWebSocket.last;
    ws1.welcome({ epoch: 'aa', seq: 0 });
    ws1.signal('order', 'created', { entity_id: '1' }, 9, 'aa');
    ws1.signal('order', 'created', { entity_id: '2' }, 10, 'aa');
    ws1.signal('order', 'created', { entity_id: '3' }, 9, 'aa');
    expect(c.position).toEqual({ epoch: 'aa', seq: 10 });
    ws1.signal('order', 'created', { entity_id: '4' }, '0000000000000001.0000000000000000', wal);
    expect(c.position).toEqual({ epoch: wal, seq: '0000000000000001.0000000000000000' });
    ws1.signal('order', 'created', { entity_id: '5' }, 99, wal);
    expect(c.position).toEqual({ epoch: wal, seq: '0000000000000001.0000000000000000' });
    ws1.signal('order', 'created', { entity_id: '6' }, 3, 'bb');
    expect(c.position).toEqual({ epoch: 'bb', seq: 3 });
    ws1.serverClose(1006);
    await flush();
    FakeWebSocket.last.welcome({ epoch: 'bb', seq: 7 });
    expect(FakeWebSocket.last.sent).toEqual([{ subscribe: ['order'], resume: { epoch: 'bb', seq: 3 } }]);
    c.disconnect();
  });

  it('grows the delay while attempts fail, never gives up, and resets after open', async () => {
    const c = make({ random: () => 1, backoff: { baseMs: 100, maxMs: 1000 } });
    c.connect();
    FakeWebSocket.last.welcome();
    const delays: number[] = [];
    let t = Date.now();
    FakeWebSocket.last.serverClose(1006);
    for (let i = 0; i < 15; i++) {
      const n = FakeWebSocket.instances.length;
      while (FakeWebSocket.instances.length === n) await vi.advanceTimersByTimeAsync(10);
      delays.push(Date.now() - t);
      t = Date.now();
      FakeWebSocket.last.serverClose(1006); // handshake fails
    }
    expect(delays.slice(0, 5)).toEqual([100, 200, 400, 800, 1000]);
    expect(delays.slice(5).every((d) => d === 1000)).toBe(true);
    expect(c.state).toBe('connecting');
    // a successful connection resets the attempt counter
    const n = FakeWebSocket.instances.length;
    await vi.advanceTimersByTimeAsync(1000);
    expect(FakeWebSocket.instances.length).toBe(n + 1);
    FakeWebSocket.last.welcome();
    expect(c.reconnectAttempt).toBe(0);
    t = Date.now();
    FakeWebSocket.last.serverClose(1001);
    while (FakeWebSocket.instances.length === n + 1) await vi.advanceTimersByTimeAsync(10);
    expect(Date.now() - t).toBe(100);
    c.disconnect();
  });

  it('closes and reconnects when nothing arrives within the heartbeat timeout (2.5 × heartbeat_ms)', async () => {
    const c = make({ random: () => 0 });
    c.connect();
    const ws1 = FakeWebSocket.last;
    ws1.welcome({ heartbeat_ms: 1000 });
    await vi.advanceTimersByTimeAsync(2000);
    ws1.signal('order', 'created', { entity_id: '1' }, 1); // traffic keeps it alive
    await vi.advanceTimersByTimeAsync(2000);
    expect(FakeWebSocket.instances).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(500);
    expect(ws1.closedWith?.code).toBe(4000);
    await vi.advanceTimersByTimeAsync(1); // backoff delay 0 (random() = 0)
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(c.state).toBe('connecting');
    c.disconnect();
  });

  it('uses 75 s before the welcome and an explicit heartbeatTimeoutMs when given', async () => {
    const c = make({ random: () => 0 });
    c.connect();
    await vi.advanceTimersByTimeAsync(74_999);
    expect(FakeWebSocket.instances).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(2);
    expect(FakeWebSocket.instances).toHaveLength(2);
    c.disconnect();

    FakeWebSocket.reset();
    const d = make({ heartbeatTimeoutMs: 300, random: () => 0 });
    d.connect();
    FakeWebSocket.last.welcome({ heartbeat_ms: 30000 });
    await vi.advanceTimersByTimeAsync(302);
    expect(FakeWebSocket.instances).toHaveLength(2);
    d.disconnect();
  });

  it('sends the token first when auth is required, opens on authenticated, and refreshes on auth_expiring', async () => {
    let n = 0;
    const getToken = vi.fn(async () => `tok${++n}`);
    const c = make({ getToken });
    c.subscribe('order', vi.fn());
    c.connect();
    const ws = FakeWebSocket.last;
    ws.welcome({ auth: 'required' });
    await flush();
    expect(ws.sent[0]).toEqual({ auth: 'tok1' });
    expect(ws.sent).toHaveLength(1); // nothing before authenticated
    expect(c.state).toBe('connecting');
    ws.serverSend({ type: 'authenticated', expires_at: 100 });
    expect(c.state).toBe('open');
    expect(ws.sent[1]).toMatchObject({ subscribe: ['order'] });
    ws.serverSend({ type: 'auth_expiring', expires_at: 100 });
    await flush();
    expect(ws.sent[2]).toEqual({ auth: 'tok2' });
    expect(getToken).toHaveBeenCalledTimes(2);
    c.disconnect();
  });

  it('tries a refresh whose getToken threw again with backoff before the token expires, and not past it', async () => {
    let n = 0;
    let failing = 0;
    const getToken = vi.fn(async () => {
      if (failing > 0) {
        failing -= 1;
        throw new Error('token endpoint unreachable');
      }
      return `tok${++n}`;
    });
    const c = make({ getToken, random: () => 0 });
    const errors: BroadcastError[] = [];
    c.onError((e) => errors.push(e));
    c.connect();
    const ws = FakeWebSocket.last;
    ws.welcome({ auth: 'required' });
    await flush();
    ws.serverSend({ type: 'authenticated' });
    const expiresAt = Math.floor(Date.now() / 1000) + 30;
    failing = 2;
    ws.serverSend({ type: 'auth_expiring', expires_at: expiresAt });
    await flush();
    expect(ws.sent.filter((m) => 'auth' in m)).toEqual([{ auth: 'tok1' }]);
    // Two failures, each tried again after the backoff (500 ms base with random 0).
    await vi.advanceTimersByTimeAsync(500);
    expect(ws.sent.filter((m) => 'auth' in m)).toEqual([{ auth: 'tok1' }]);
    await vi.advanceTimersByTimeAsync(500);
    expect(ws.sent.filter((m) => 'auth' in m)).toEqual([{ auth: 'tok1' }, { auth: 'tok2' }]);
    expect(errors.filter((e) => e.kind === 'token')).toHaveLength(2);
    expect(FakeWebSocket.instances).toHaveLength(1);

    // A getToken that keeps failing stops being asked once the token is past its exp:
    // the server's 4001 then makes the reconnect ask again.
    failing = Number.POSITIVE_INFINITY;
    ws.serverSend({ type: 'auth_expiring', expires_at: Math.floor(Date.now() / 1000) + 2 });
    await vi.advanceTimersByTimeAsync(10_000);
    const calls = getToken.mock.calls.length;
    await vi.advanceTimersByTimeAsync(60_000);
    expect(getToken.mock.calls.length).toBe(calls);
    expect(calls).toBeLessThanOrEqual(3 + 5);
    c.disconnect();
  });

  it('reconnects after close 4001 with a fresh token', async () => {
    let n = 0;
    const c = make({ getToken: async () => `tok${++n}`, random: () => 0 });
    c.connect();
    FakeWebSocket.last.welcome({ auth: 'required' });
    await flush();
    FakeWebSocket.last.serverSend({ type: 'authenticated', expires_at: 1 });
    FakeWebSocket.last.serverClose(4001, 'unauthorized: the token expired');
    expect(c.lastCloseCode).toBe(4001);
    await flush();
    expect(FakeWebSocket.instances).toHaveLength(2);
    FakeWebSocket.last.welcome({ auth: 'required' });
    await flush();
    expect(FakeWebSocket.last.sent[0]).toEqual({ auth: 'tok2' });
    c.disconnect();
  });

  it('stops (closed, onError kind auth) when getToken returns null', async () => {
    const c = make({ getToken: async () => null, random: () => 0 });
    const errors: BroadcastError[] = [];
    c.onError((e) => errors.push(e));
    c.connect();
    FakeWebSocket.last.welcome({ auth: 'required' });
    await flush();
    expect(c.state).toBe('closed');
    expect(errors.map((e) => e.kind)).toEqual(['auth']);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it('stops when the server requires auth and there is no getToken', async () => {
    const c = make();
    const errors: BroadcastError[] = [];
    c.onError((e) => errors.push(e));
    c.connect();
    FakeWebSocket.last.welcome({ auth: 'required' });
    await flush();
    expect(c.state).toBe('closed');
    expect(errors[0]?.message).toMatch(/getToken/);
  });

  it('surfaces server error frames and revocations through onError', () => {
    const c = make();
    const errors: BroadcastError[] = [];
    c.onError((e) => errors.push(e));
    c.connect();
    const ws = FakeWebSocket.last;
    ws.welcome();
    ws.serverSend({ type: 'error', code: 'forbidden', message: 'no', topics: ['secret'] });
    ws.serverSend({ type: 'unsubscribed', channels: ['order'], reason: 'revoked' });
    ws.serverSend({ type: 'subscribed', channels: ['order'] });
    expect(errors).toEqual([
      { kind: 'server', code: 'forbidden', message: 'no', topics: ['secret'] },
      expect.objectContaining({ kind: 'revoked', topics: ['order'] }),
    ]);
    c.disconnect();
  });

  it('a throwing handler does not stop the others', () => {
    vi.spyOn(console, 'error').mockImplementation(() => {});
    const c = make();
    const ok = vi.fn();
    c.subscribe('order', () => {
      throw new Error('boom');
    });
    c.subscribe('order', ok);
    c.connect();
    FakeWebSocket.last.welcome();
    FakeWebSocket.last.signal('order', 'created', { entity_id: '1' }, 1);
    expect(ok).toHaveBeenCalledTimes(1);
    c.disconnect();
  });

  it('initBroadcast / getBroadcastClient / subscribeToBroadcast use one singleton', () => {
    expect(() => getBroadcastClient()).toThrow(/initBroadcast/);
    expect(() => subscribeToBroadcast('order', () => {})).toThrow(/initBroadcast/);
    const c = initBroadcast({ url: 'ws://x/ws/broadcast', WebSocket: FakeWebSocket, connect: true });
    expect(getBroadcastClient()).toBe(c);
    expect(c.state).toBe('connecting');
    const h = vi.fn();
    subscribeToBroadcast('order', h);
    FakeWebSocket.last.welcome();
    expect(FakeWebSocket.last.sent).toEqual([{ subscribe: ['order'] }]);
    FakeWebSocket.last.signal('order', 'created', { entity_id: '1' }, 1);
    expect(h).toHaveBeenCalledTimes(1);
  });

  describe('initBroadcast connects lazily (safe at module scope and during a server render)', () => {
    // A browser, as far as the client can tell (this project runs in Node).
    const asBrowser = () => {
      vi.stubGlobal('window', new EventTarget());
      vi.stubGlobal('document', new EventTarget());
    };
    afterEach(() => {
      vi.unstubAllGlobals();
    });

    it('in a browser: no socket until the first subscription, which connects and subscribes', () => {
      asBrowser();
      const c = initBroadcast({ url: 'ws://x/ws/broadcast', WebSocket: FakeWebSocket });
      expect(FakeWebSocket.instances).toHaveLength(0);
      expect(c.state).toBe('closed');
      const h = vi.fn();
      subscribeToBroadcast('order', h);
      expect(FakeWebSocket.instances).toHaveLength(1);
      expect(c.state).toBe('connecting');
      FakeWebSocket.last.welcome();
      expect(FakeWebSocket.last.sent).toEqual([{ subscribe: ['order'] }]);
      FakeWebSocket.last.signal('order', 'created', { entity_id: '1' }, 1);
      expect(h).toHaveBeenCalledTimes(1);
      subscribeToBroadcast('item', () => {});
      expect(FakeWebSocket.instances).toHaveLength(1);
    });

    it('on the server (no window): no socket at all, subscriptions only held', async () => {
      expect(typeof window).toBe('undefined');
      const c = initBroadcast({ url: 'ws://x/ws/broadcast', WebSocket: FakeWebSocket });
      const off = subscribeToBroadcast('order', () => {});
      subscribeToBroadcast('order:1', () => {});
      off();
      await flush();
      await vi.advanceTimersByTimeAsync(60_000);
      expect(FakeWebSocket.instances).toHaveLength(0);
      expect(c.state).toBe('closed');
      expect(c.subscribedTopics).toEqual(['order:1']);
    });

    it('connect: true connects at once (even without a window); connect: false waits for connect()', () => {
      const now = initBroadcast({ url: 'ws://now/ws', WebSocket: FakeWebSocket, connect: true });
      expect(FakeWebSocket.instances.map((s) => s.url)).toEqual(['ws://now/ws']);
      expect(now.state).toBe('connecting');
      asBrowser();
      const manual = initBroadcast({ url: 'ws://manual/ws', WebSocket: FakeWebSocket, connect: false });
      expect(now.state).toBe('closed'); // replaced: disconnected
      subscribeToBroadcast('order', () => {});
      expect(FakeWebSocket.instances).toHaveLength(1);
      manual.connect();
      expect(FakeWebSocket.last.url).toBe('ws://manual/ws');
      FakeWebSocket.last.welcome();
      expect(FakeWebSocket.last.sent).toEqual([{ subscribe: ['order'] }]);
    });

    it('an explicit disconnect() before the first subscription keeps it disconnected', () => {
      asBrowser();
      const c = initBroadcast({ url: 'ws://x/ws/broadcast', WebSocket: FakeWebSocket });
      c.disconnect();
      subscribeToBroadcast('order', () => {});
      expect(FakeWebSocket.instances).toHaveLength(0);
      c.connect();
      expect(FakeWebSocket.instances).toHaveLength(1);
    });
  });

  it('reports a missing WebSocket implementation clearly', () => {
    const g = globalThis as { WebSocket?: unknown };
    const saved = g.WebSocket;
    delete g.WebSocket;
    try {
      const c = new BroadcastClient({ url: 'ws://x' });
      const errors: BroadcastError[] = [];
      c.onError((e) => errors.push(e));
      c.connect();
      expect(c.state).toBe('closed');
      expect(errors[0]?.message).toMatch(/WebSocket/);
    } finally {
      if (saved !== undefined) g.WebSocket = saved;
    }
  });
});
