/**
 * End to end against the real pgbroadcast binary (`pgbroadcast demo` on a
 * private Postgres), with `ws` as the WebSocket:
 *  1. POST /api/orders → the handler gets `created` with the order id and txid;
 *  2. the LISTEN backend is terminated → the handler gets `resync`;
 *  3. the server is restarted on the same port → the client reconnects and
 *     resubscribes by itself, and a new POST's signal arrives;
 *  4. with `--transport wal` and the database sending through the WAL, seqs
 *     are strings: the newest is the position, and a reconnect resumes from
 *     it with the same string, the server replaying what was missed.
 *
 * Starting and stopping the server, its REST API and waiting: ./demo.ts
 * (the binary: $PGBROADCAST_BIN, or the debug build in cargo's target
 * directory, built with `cargo build` if missing).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { BroadcastClient, type BroadcastClientOptions, type BroadcastSignal, type ConnectionState, type ControlFrame } from '../../src/client.js';
import { api, ensureBinary, sql, startDemo, stopDemo, waitFor as waitForDemo, type Demo, type StartDemoOptions } from './demo.js';

/** Every signal received, for the error messages of timed-out waits. */
const signalLog: BroadcastSignal[] = [];

/** `waitFor` of ./demo.ts, with the last signals in its timeout message. */
function waitFor<T>(what: string, fn: () => T | undefined | false | null, timeoutMs = 20_000): Promise<T> {
  return waitForDemo(what, fn, timeoutMs, () => `; signals so far: ${JSON.stringify(signalLog.slice(-10))}`);
}

/** Every server started, stopped after each describe (a restart leaves more than one). */
const servers = new Set<Demo>();

async function startServer(options: StartDemoOptions = {}): Promise<Demo> {
  const server = await startDemo(options);
  servers.add(server);
  return server;
}

async function stopServers(): Promise<void> {
  await Promise.all([...servers].map((s) => stopDemo(s)));
  servers.clear();
}

function post(s: Demo, path: string, body: unknown): Promise<{ data: { id: number }; txid: number }> {
  return api(s, 'POST', path, body);
}


/**
 * A client of `server` subscribed to `order`, connected and live (the server
 * said `subscribed`: a write is delivered from then on). Its signals go to
 * `signals` (and the log), the channels of its `subscribed` acks to
 * `subscribed`; `watch` sees it before it connects.
 */
async function orderClient(
  server: Demo,
  socket: BroadcastClientOptions['WebSocket'],
  signals: BroadcastSignal[],
  subscribed: string[],
  watch: (client: BroadcastClient) => void = () => {},
): Promise<BroadcastClient> {
  const client = new BroadcastClient({ url: server.wsUrl, WebSocket: socket, backoff: { baseMs: 100, maxMs: 1000 } });
  watch(client);
  client.onControl((f) => {
    if (f.type === 'subscribed') subscribed.push(...(f.channels ?? []));
  });
  client.subscribe('order', (s) => {
    signals.push(s);
    signalLog.push(s);
  });
  client.connect();
  await waitFor('state open', () => client.state === 'open');
  await waitFor('subscribed order', () => subscribed.includes('order'));
  return client;
}

/** `ws`, keeping every socket made and the messages sent on each. */
class TracedWebSocket extends WebSocket {
  static instances: TracedWebSocket[] = [];
  readonly sentMessages: any[] = [];
  constructor(url: string) {
    super(url);
    TracedWebSocket.instances.push(this);
  }
  override send(data: string): void {
    this.sentMessages.push(JSON.parse(data));
    super.send(data);
  }
}

describe('BroadcastClient against the real pgbroadcast server', () => {
  let port = 0;
  let server: Demo | null = null;
  let client: BroadcastClient | null = null;
  const signals: BroadcastSignal[] = [];
  const states: ConnectionState[] = [];
  const subscribed: string[] = [];

  beforeAll(async () => {
    ensureBinary();
    server = await startServer();
    port = server.port;
    client = await orderClient(server, WebSocket, signals, subscribed, (c) => c.onStateChange((s) => states.push(s)));
  }, 1_500_000);

  afterAll(async () => {
    client?.disconnect();
    await stopServers();
  }, 60_000);

  it('delivers `created` with the order id and txid of a REST write', async () => {
    const res = await post(server!, '/api/orders', { customer: 'ada' });
    expect(typeof res.txid).toBe('number');
    const got = await waitFor('the created signal', () =>
      signals.find((s) => s.event === 'created' && s.entityId === String(res.data.id)),
    );
    expect(got).toMatchObject({ channel: 'order', entityId: String(res.data.id), txid: res.txid, resync: false });
    expect(typeof got.seq).toBe('number');
    expect(typeof got.epoch).toBe('string');
  });

  it('takes 300 topics subscribed in one tick without tripping the rate limit, and drops them the same way', async () => {
    const errors: ControlFrame[] = [];
    const offControl = client!.onControl((f) => {
      if (f.type === 'error') errors.push(f);
    });
    const topics = Array.from({ length: 300 }, (_, i) => `order:${1_000_000 + i}`);
    const acked = new Set<string>();
    const offAck = client!.onControl((f) => {
      if (f.type === 'subscribed') for (const t of f.channels ?? []) acked.add(t);
    });
    const offs = topics.map((t) => client!.subscribe(t, () => {}));
    // Sent one message each, 250 of them would be dropped by the server's 50 a second.
    await waitFor('every topic acknowledged', () => topics.every((t) => acked.has(t)));
    offAck();
    expect(topics.every((t) => client!.topicStatus(t) === 'live')).toBe(true);
    const unsubscribed: string[] = [];
    const offUnsub = client!.onControl((f) => {
      if (f.type === 'unsubscribed') unsubscribed.push(...(f.channels ?? []));
    });
    for (const off of offs) off();
    await waitFor('every topic unsubscribed', () => topics.every((t) => unsubscribed.includes(t)));
    offUnsub();
    offControl();
    expect(errors).toEqual([]);
    expect(client!.topicStatus('order')).toBe('live');
  });

  it('delivers `resync` on order when the LISTEN backend is terminated', async () => {
    const before = signals.length;
    const terminated = sql(
      server!.pgUrl,
      "select count(pg_terminate_backend(pid)) from pg_stat_activity where application_name = 'pgbroadcast-listener'",
    );
    expect(Number(terminated)).toBeGreaterThanOrEqual(1);
    const resync = await waitFor('a resync on order', () =>
      signals.slice(before).find((s) => s.channel === 'order' && s.resync),
    );
    expect(resync).toMatchObject({ event: 'resync', resync: true });
    expect(resync.entityId).toBeUndefined();
    // The listener is back: writes are signalled again.
    const res = await post(server!, '/api/orders', { customer: 'bob' });
    await waitFor('the created signal after the listener reconnected', () =>
      signals.find((s) => s.event === 'created' && s.txid === res.txid),
    );
  });

  it('reconnects and resubscribes by itself after the server restarts', async () => {
    const statesBefore = states.length;
    const signalsBefore = signals.length;
    const epochBefore = client!.position?.epoch;
    await stopDemo(server!);
    await waitFor('the client to notice the restart', () => client!.state !== 'open', 10_000);
    server = await startServer({ port });
    await waitFor('the client to be open again', () => client!.state === 'open', 30_000);
    expect(states.slice(statesBefore)).toContain('connecting');
    expect(states.at(-1)).toBe('open');
    // A new process has a new epoch: resume is impossible, so the server says resync.
    await waitFor('a resync after the restart', () =>
      signals.slice(signalsBefore).find((s) => s.resync && s.payload.reason === 'resume_unavailable'),
    );
    // The resume is through: the position is in the new epoch (before any
    // signal of it), so the next reconnect can resume.
    await waitFor('the new epoch adopted', () => client!.position && client!.position.epoch !== epochBefore);
    const adopted = client!.position!.epoch;
    // A fresh private cluster may reuse the first server's ids and txids: look only at new signals.
    const res = await post(server!, '/api/orders', { customer: 'cy' });
    const got = await waitFor('the created signal on the new server', () =>
      signals.slice(signalsBefore).find((s) => s.event === 'created' && s.txid === res.txid && s.entityId === String(res.data.id)),
    );
    expect(got.epoch).not.toBe(epochBefore);
    expect(got.epoch).toBe(adopted);
  });
});

describe('BroadcastClient against the real pgbroadcast server over the wal transport', () => {
  let server: Demo | null = null;
  let client: BroadcastClient | null = null;
  const signals: BroadcastSignal[] = [];
  const subscribed: string[] = [];

  /** Inserts an order in a new session, which sends through the WAL; its id. */
  const createOrder = (customer: string) => sql(server!.pgUrl, `insert into orders (customer) values ('${customer}') returning id`);
  const created = (what: string, id: string, from = 0) =>
    waitFor(what, () => signals.slice(from).find((s) => s.event === 'created' && s.entityId === id));
  const resyncs = (from: number) => signals.slice(from).filter((s) => s.resync);

  beforeAll(async () => {
    ensureBinary();
    server = await startServer({ args: ['--transport', 'wal'] });
    // Sessions started from now on send through the WAL (the demo's pool may
    // predate this, so writes here go through psql).
    sql(
      server.pgUrl,
      "do $$ begin execute format('alter database %I set pgbroadcast.transport = %L', current_database(), 'wal'); end $$",
    );
    client = await orderClient(server, TracedWebSocket, signals, subscribed);
  }, 1_500_000);

  afterAll(async () => {
    client?.disconnect();
    await stopServers();
  }, 60_000);

  it('records the string seq of the WAL epoch as the position, the newest one winning', async () => {
    const first = await created('the created signal of the first order', createOrder('ada'));
    expect(first.epoch).toMatch(/^wal\./);
    expect(first.seq).toMatch(/^[0-9A-F]{16}\.[0-9A-F]{16}$/);
    expect(client!.position).toEqual({ epoch: first.epoch, seq: first.seq });
    const second = await created('the created signal of the second order', createOrder('bob'));
    expect(second.epoch).toBe(first.epoch);
    expect(String(second.seq) > String(first.seq)).toBe(true);
    expect(client!.position).toEqual({ epoch: second.epoch, seq: second.seq });
  });

  it('resumes after a lost connection with the seq string exactly as received', async () => {
    const before = client!.position!;
    expect(typeof before.seq).toBe('string');
    const signalsBefore = signals.length;
    const socketsBefore = TracedWebSocket.instances.length;
    subscribed.length = 0;
    TracedWebSocket.instances.at(-1)!.terminate();
    await waitFor('the client to resubscribe on a new connection', () => client!.state === 'open' && subscribed.includes('order'));
    const resumed = TracedWebSocket.instances.slice(socketsBefore);
    expect(resumed).toHaveLength(1);
    // Then an empty unsubscribe: its answer says the replay is through.
    expect(resumed[0]!.sentMessages).toEqual([
      { subscribe: ['order'], resume: { epoch: before.epoch, seq: before.seq } },
      { unsubscribe: [] },
    ]);
    expect(typeof resumed[0]!.sentMessages[0].resume.seq).toBe('string');
    const next = await created('the created signal after the reconnect', createOrder('cy'), signalsBefore);
    expect(next.epoch).toBe(before.epoch);
    expect(String(next.seq) > String(before.seq)).toBe(true);
    expect(resyncs(signalsBefore)).toEqual([]);
  });

  it('gets what was written while it was away replayed from that position, with no resync', async () => {
    const before = client!.position!;
    const signalsBefore = signals.length;
    const socketsBefore = TracedWebSocket.instances.length;
    subscribed.length = 0;
    client!.disconnect();
    const missed = createOrder('dee');
    client!.connect();
    await waitFor('the client to resubscribe', () => client!.state === 'open' && subscribed.includes('order'));
    expect(TracedWebSocket.instances.slice(socketsBefore).map((s) => s.sentMessages)).toEqual([
      [{ subscribe: ['order'], resume: { epoch: before.epoch, seq: before.seq } }, { unsubscribe: [] }],
    ]);
    const replayed = await created('the replayed created signal', missed, signalsBefore);
    expect(replayed.epoch).toBe(before.epoch);
    expect(String(replayed.seq) > String(before.seq)).toBe(true);
    // Once the replay is through, the position is at least the replayed signal
    // (the welcome's seq, if the node had read further).
    await waitFor('the position to move past the replay', () => {
      const p = client!.position!;
      return p.epoch === replayed.epoch && String(p.seq) >= String(replayed.seq);
    });
    expect(resyncs(signalsBefore)).toEqual([]);
  });
});

describe('a client whose topic stays quiet, against the real server', () => {
  let server: Demo | null = null;

  beforeAll(async () => {
    ensureBinary();
    // A history of two signals, heartbeats every second.
    server = await startServer({ args: ['--history-size', '2', '--heartbeat', '1s'] });
  }, 1_500_000);

  afterAll(async () => {
    await stopServers();
  }, 60_000);

  it('follows the heartbeats past signals it never got, and resumes with no resync after they left the history', async () => {
    const quietOrder = await post(server!, '/api/orders', { customer: 'quiet' });
    const quietId = String(quietOrder.data.id);
    const loudSignals: BroadcastSignal[] = [];
    const loud = await orderClient(server!, WebSocket, loudSignals, []);
    const signals: BroadcastSignal[] = [];
    const subscribed: string[] = [];
    const quiet = new BroadcastClient({ url: server!.wsUrl, WebSocket: TracedWebSocket, backoff: { baseMs: 100, maxMs: 1000 } });
    quiet.onControl((f) => {
      if (f.type === 'subscribed') subscribed.push(...(f.channels ?? []));
    });
    quiet.subscribe(`order:${quietId}`, (s) => signals.push(s));
    quiet.connect();
    await waitFor('the quiet topic live', () => subscribed.includes(`order:${quietId}`));
    const start = quiet.position!;
    // Five orders it does not follow: more than the history holds.
    for (let i = 0; i < 5; i++) await post(server!, '/api/orders', { customer: `other ${i}` });
    const last = await waitFor('the loud client to see five orders', () => loudSignals.filter((s) => s.event === 'created').at(4));
    await waitFor('the quiet position to reach the last signal by heartbeat', () => {
      const p = quiet.position!;
      return p.epoch === last.epoch && Number(p.seq) >= Number(last.seq);
    });
    expect(signals).toEqual([]);
    expect(Number(start.seq)).toBeLessThan(Number(last.seq));
    const at = quiet.position!;
    subscribed.length = 0;
    const socketsBefore = TracedWebSocket.instances.length;
    TracedWebSocket.instances.at(-1)!.terminate();
    await waitFor('the quiet client back on a new connection', () => quiet.state === 'open' && subscribed.includes(`order:${quietId}`));
    expect(TracedWebSocket.instances.slice(socketsBefore)[0]!.sentMessages[0]).toEqual({
      subscribe: [`order:${quietId}`],
      resume: { epoch: at.epoch, seq: at.seq },
    });
    await api(server!, 'PATCH', `/api/orders/${quietId}`, { status: 'preparing' });
    await waitFor('the quiet order to change', () => signals.find((s) => s.entityId === quietId && !s.resync));
    expect(signals.filter((s) => s.resync)).toEqual([]);
    quiet.disconnect();
    loud.disconnect();
  });
});
