/**
 * Starting again after a stop (reconnect, setToken), close codes reported,
 * URLs that can never work, and the browser's network and visibility events.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BroadcastClient, type BroadcastError } from '../../src/client.js';
import { FakeWebSocket } from '../fake-ws.js';

const tick = () => vi.advanceTimersByTimeAsync(0);

function make(opts: Partial<ConstructorParameters<typeof BroadcastClient>[0]> = {}) {
  const c = new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket, random: () => 1, ...opts });
  const errors: BroadcastError[] = [];
  c.onError((e) => errors.push(e));
  return { c, errors };
}

beforeEach(() => {
  vi.useFakeTimers();
  FakeWebSocket.reset();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('URLs that can never work', () => {
  for (const url of ['not a url', 'ftp://host/ws/broadcast']) {
    it(`stops with a socket error instead of retrying: ${url}`, async () => {
      const { c, errors } = make({ url });
      c.connect();
      expect(c.state).toBe('closed');
      expect(errors).toEqual([expect.objectContaining({ kind: 'socket' })]);
      await vi.advanceTimersByTimeAsync(120_000);
      expect(FakeWebSocket.instances).toHaveLength(0);
      expect(errors).toHaveLength(1);
    });
  }

  it('stops when the WebSocket constructor rejects the URL (SyntaxError), retries other failures', async () => {
    class Throwing {
      static error: Error = Object.assign(new Error('bad url'), { name: 'SyntaxError' });
      constructor() {
        throw Throwing.error;
      }
    }
    const { c, errors } = make({ WebSocket: Throwing });
    c.connect();
    expect(c.state).toBe('closed');
    expect(errors.map((e) => e.kind)).toEqual(['socket']);
    Throwing.error = new Error('out of sockets');
    c.connect();
    expect(c.state).toBe('connecting'); // retried with backoff
    c.disconnect();
  });
});

describe('close codes', () => {
  it('reports every close of a wanted connection through onError, not a disconnect()', async () => {
    const { c, errors } = make({ random: () => 0 });
    c.connect();
    FakeWebSocket.last.welcome();
    FakeWebSocket.last.serverClose(1013, 'too slow: queue full');
    await tick();
    FakeWebSocket.last.welcome();
    FakeWebSocket.last.serverClose(4001, 'unauthorized: the token expired');
    await tick();
    FakeWebSocket.last.welcome();
    c.disconnect();
    expect(errors).toEqual([
      { kind: 'close', closeCode: 1013, message: 'too slow: queue full' },
      { kind: 'close', closeCode: 4001, message: 'unauthorized: the token expired' },
    ]);
  });

  it('reports its own heartbeat timeout as close 4000', async () => {
    const { c, errors } = make({ random: () => 0, heartbeatTimeoutMs: 1000 });
    c.connect();
    FakeWebSocket.last.welcome();
    await vi.advanceTimersByTimeAsync(1000);
    expect(errors).toEqual([{ kind: 'close', closeCode: 4000, message: 'heartbeat timeout' }]);
    c.disconnect();
  });
});

describe('starting again', () => {
  it('setToken() restarts a client stopped for want of a token and is used instead of getToken()', async () => {
    const getToken = vi.fn(async () => null);
    const { c, errors } = make({ getToken });
    c.subscribe('order', () => {});
    c.setToken('early');
    expect(c.state).toBe('closed'); // not connected: setToken does not connect it
    c.setToken(null);
    c.connect();
    FakeWebSocket.last.welcome({ auth: 'required' });
    await tick();
    expect(c.state).toBe('closed');
    expect(errors.map((e) => e.kind)).toEqual(['auth']);
    c.setToken('tok');
    expect(c.state).toBe('connecting');
    const ws = FakeWebSocket.last;
    ws.welcome({ auth: 'required' });
    await tick();
    expect(ws.sent).toEqual([{ auth: 'tok' }]);
    ws.serverSend({ type: 'authenticated', expires_at: 1 });
    expect(c.state).toBe('open');
    expect(ws.sent[1]).toMatchObject({ subscribe: ['order'] });
    expect(getToken).toHaveBeenCalledTimes(1);
    c.disconnect();
  });

  it('setToken() on an open connection sends it at once and asks again for what the old token could not have', async () => {
    const { c } = make({ getToken: () => 'a' });
    c.subscribe('secret', () => {});
    c.connect();
    const ws = FakeWebSocket.last;
    ws.welcome({ auth: 'required' });
    await tick();
    ws.serverSend({ type: 'authenticated', expires_at: 1 });
    ws.serverSend({ type: 'error', code: 'forbidden', message: 'no', topics: ['secret'] });
    expect(c.topicStatus('secret')).toBe('forbidden');
    c.setToken('b');
    await tick();
    expect(ws.sent).toEqual([{ auth: 'a' }, { subscribe: ['secret'] }, { auth: 'b' }, { subscribe: ['secret'] }]);
    c.disconnect();
  });

  it('reconnect() connects again at once: after a stop, and replacing an open connection', async () => {
    const tokens = [null, 't1', 't2'];
    const { c } = make({ getToken: async () => tokens.shift() ?? null });
    c.subscribe('order', () => {});
    c.connect();
    FakeWebSocket.last.welcome({ auth: 'required', epoch: 'e', seq: 3 });
    await tick();
    expect(c.state).toBe('closed');
    c.reconnect();
    const ws2 = FakeWebSocket.last;
    expect(FakeWebSocket.instances).toHaveLength(2);
    ws2.welcome({ auth: 'required', epoch: 'e', seq: 3 });
    await tick();
    ws2.serverSend({ type: 'authenticated', expires_at: 1 });
    expect(c.state).toBe('open');
    c.reconnect();
    expect(ws2.closedWith?.code).toBe(1000);
    expect(FakeWebSocket.instances).toHaveLength(3);
    const ws3 = FakeWebSocket.last;
    ws3.welcome({ auth: 'required', epoch: 'e', seq: 3 });
    await tick();
    expect(ws3.sent[0]).toEqual({ auth: 't2' });
    c.disconnect();
  });
});

describe('network and visibility (browser)', () => {
  const g = globalThis as { window?: unknown; document?: unknown };
  let doc: EventTarget & { visibilityState: string };
  beforeEach(() => {
    g.window = new EventTarget();
    doc = Object.assign(new EventTarget(), { visibilityState: 'visible' });
    g.document = doc;
  });
  afterEach(() => {
    delete g.window;
    delete g.document;
  });

  it('reconnects at once when the network comes back instead of waiting out the backoff', async () => {
    const { c } = make({ backoff: { baseMs: 10_000, maxMs: 30_000 } });
    c.connect();
    FakeWebSocket.last.welcome();
    FakeWebSocket.last.serverClose(1006);
    await vi.advanceTimersByTimeAsync(1000);
    expect(FakeWebSocket.instances).toHaveLength(1);
    (g.window as EventTarget).dispatchEvent(new Event('online'));
    expect(FakeWebSocket.instances).toHaveLength(2);
    c.disconnect();
    // Listeners are gone with disconnect().
    (g.window as EventTarget).dispatchEvent(new Event('online'));
    expect(FakeWebSocket.instances).toHaveLength(2);
  });

  it('drops the connection when the network goes offline and tries nothing until it is back online', async () => {
    const { c, errors } = make({ backoff: { baseMs: 100, maxMs: 1000 } });
    c.connect();
    const ws = FakeWebSocket.last;
    ws.welcome();
    (g.window as EventTarget).dispatchEvent(new Event('offline'));
    expect(ws.closedWith?.code).toBe(4000);
    expect(errors).toEqual([{ kind: 'close', closeCode: 4000, message: 'offline' }]);
    expect(c.state).toBe('connecting');
    // No retries while offline, however long it lasts.
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
    (g.window as EventTarget).dispatchEvent(new Event('online'));
    expect(FakeWebSocket.instances).toHaveLength(2);
    FakeWebSocket.last.welcome();
    expect(c.state).toBe('open');
    c.disconnect();
  });

  it('checks liveness when the page becomes visible: a connection silent past its heartbeats is replaced', async () => {
    const { c, errors } = make();
    c.connect();
    const ws = FakeWebSocket.last;
    ws.welcome({ heartbeat_ms: 30_000 });
    // Timers of a hidden page barely run: the clock moves, the heartbeat timer does not fire.
    vi.setSystemTime(Date.now() + 20_000);
    doc.dispatchEvent(new Event('visibilitychange'));
    expect(FakeWebSocket.instances).toHaveLength(1); // heard from recently enough
    vi.setSystemTime(Date.now() + 40_000);
    doc.visibilityState = 'hidden';
    doc.dispatchEvent(new Event('visibilitychange'));
    expect(FakeWebSocket.instances).toHaveLength(1);
    doc.visibilityState = 'visible';
    doc.dispatchEvent(new Event('visibilitychange'));
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(ws.closedWith?.code).toBe(4000);
    expect(errors).toEqual([{ kind: 'close', closeCode: 4000, message: 'no heartbeat' }]);
    c.disconnect();
  });
});
