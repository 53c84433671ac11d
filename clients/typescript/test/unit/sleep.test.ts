/**
 * Wake from sleep: a laptop that slept with the page visible fires no event;
 * the heartbeat timeout (2.5 × heartbeat_ms) would notice only after ~75 s.
 * A low-frequency timer notices that the wall clock jumped far past its
 * interval and replaces a connection that has been silent since before the
 * jump. Fake timers: `vi.setSystemTime` moves the clock without running the
 * timers in between (as a sleeping machine does).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BroadcastClient, type BroadcastError } from '../../src/client.js';
import { FakeWebSocket } from '../fake-ws.js';

function make() {
  const c = new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket, random: () => 1 });
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

describe('wake from sleep (no window needed)', () => {
  it('replaces an open connection at once when the clock jumped and nothing arrived since', async () => {
    const { c, errors } = make();
    c.connect();
    const ws = FakeWebSocket.last;
    ws.welcome({ heartbeat_ms: 30_000 });
    expect(c.state).toBe('open');
    // Awake: the check runs on time and changes nothing.
    await vi.advanceTimersByTimeAsync(20_000);
    ws.serverSend({ type: 'pong' });
    expect(FakeWebSocket.instances).toHaveLength(1);
    // Asleep for 60 s: the clock jumps, no timer runs meanwhile.
    vi.setSystemTime(Date.now() + 60_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
    // The first check after waking (within a few seconds, far before the 75 s heartbeat timeout).
    await vi.advanceTimersByTimeAsync(5_000);
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(ws.closedWith?.code).toBe(4000);
    expect(errors).toEqual([{ kind: 'close', closeCode: 4000, message: 'woke from sleep' }]);
    expect(c.state).toBe('connecting');
    FakeWebSocket.last.welcome({ heartbeat_ms: 30_000 });
    expect(c.state).toBe('open');
    c.disconnect();
  });

  it('keeps the connection when a frame arrived after the jump', async () => {
    const { c, errors } = make();
    c.connect();
    const ws = FakeWebSocket.last;
    ws.welcome({ heartbeat_ms: 30_000 });
    vi.setSystemTime(Date.now() + 60_000);
    ws.serverSend({ type: 'pong' }); // the connection survived the sleep
    await vi.advanceTimersByTimeAsync(5_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(errors).toEqual([]);
    c.disconnect();
  });

  it('ignores small delays (a busy event loop) and runs no timer after disconnect()', async () => {
    const { c } = make();
    c.connect();
    const ws = FakeWebSocket.last;
    ws.welcome({ heartbeat_ms: 30_000 });
    vi.setSystemTime(Date.now() + 4_000); // within the slack
    await vi.advanceTimersByTimeAsync(5_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
    c.disconnect();
    expect(vi.getTimerCount()).toBe(0);
    vi.setSystemTime(Date.now() + 60_000);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });
});
