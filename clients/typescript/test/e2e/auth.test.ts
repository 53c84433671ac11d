/**
 * End to end with authentication on: `pgbroadcast demo --jwt-secret …` (HS256,
 * `aud` and `iss` checked, no leeway, `auth_expiring` 2 s before `exp`), the
 * tokens minted here with node's crypto, `ws` as the WebSocket. The client:
 *  a. asks `getToken()` and authenticates with its token: the topic goes live
 *     and a write's signal arrives;
 *  b. on `auth_expiring` asks `getToken()` again and sends `{"auth": …}`: the
 *     same connection outlives the old token's `exp` and signals keep coming;
 *  c. after a close 4001 (an expired first token; a token that ran out because
 *     its refresh failed) reconnects with a fresh token and is live again;
 *  d. after its TCP connection is cut (a loopback proxy in this file), resumes
 *     on a new one: what was written while it was down arrives once, with no
 *     `resync`.
 *
 * Writes go through the demo's REST API (which takes the same tokens).
 */
import { createHmac } from 'node:crypto';
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { BroadcastClient, type BroadcastClientOptions, type BroadcastSignal, type ControlFrame, type ConnectionState } from '../../src/client.js';
import { ensureBinary, sql, startDemo, stopDemo, waitFor, type Demo } from './demo.js';

const SECRET = 'a-secret-for-the-auth-e2e-test-only-48-bytes-long!';
const AUDIENCE = 'pgbroadcast-e2e';
const ISSUER = 'https://issuer.e2e.test';
/** `--auth-expiry-notice`: `auth_expiring` comes this long before `exp`. */
const NOTICE_S = 2;

const nowS = () => Math.floor(Date.now() / 1000);
const b64url = (data: string | Buffer) => Buffer.from(data).toString('base64url');

/** An HS256 JWT for the test's server, expiring at `exp` (seconds since 1970). */
function mint(exp: number, secret = SECRET): string {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify({ sub: 'e2e', role: 'kitchen', aud: AUDIENCE, iss: ISSUER, iat: nowS(), exp }));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const longToken = () => mint(nowS() + 3600);


/** `ws`, keeping every socket made, the messages sent on each and how it closed. */
class TracedWebSocket extends WebSocket {
  static instances: TracedWebSocket[] = [];
  readonly sentMessages: any[] = [];
  closeCode: number | null = null;
  constructor(url: string) {
    super(url);
    TracedWebSocket.instances.push(this);
    this.on('close', (code) => (this.closeCode = code));
  }
  override send(data: string): void {
    this.sentMessages.push(JSON.parse(data));
    super.send(data);
  }
}

/** What one client saw. */
class Watched {
  readonly client: BroadcastClient;
  readonly signals: BroadcastSignal[] = [];
  readonly controls: ControlFrame[] = [];
  readonly closeCodes: number[] = [];
  readonly tokenErrors: string[] = [];
  readonly states: ConnectionState[] = [];
  /** The sockets this client made (the traced ones from `firstSocket` on). */
  readonly firstSocket = TracedWebSocket.instances.length;

  constructor(url: string, getToken: NonNullable<BroadcastClientOptions['getToken']>) {
    this.client = new BroadcastClient({ url, WebSocket: TracedWebSocket, getToken, backoff: { baseMs: 100, maxMs: 500 } });
    this.client.onControl((f) => this.controls.push(f));
    this.client.onError((e) => {
      if (e.kind === 'close' && e.closeCode !== undefined) this.closeCodes.push(e.closeCode);
      if (e.kind === 'token') this.tokenErrors.push(e.message);
    });
    this.client.onStateChange((s) => this.states.push(s));
    this.client.subscribe('order', (s) => this.signals.push(s));
    this.client.connect();
  }

  sockets(): TracedWebSocket[] {
    return TracedWebSocket.instances.slice(this.firstSocket);
  }
  count(type: string): number {
    return this.controls.filter((f) => f.type === type).length;
  }
  /** The client is open and `order` is live on its current connection. */
  live(): boolean {
    return this.client.state === 'open' && this.client.topicStatus('order') === 'live';
  }
  detail = (): string =>
    `; state ${this.client.state}, topic ${this.client.topicStatus('order')}, closes ${JSON.stringify(this.closeCodes)}, ` +
    `controls ${JSON.stringify(this.controls.slice(-8))}, signals ${JSON.stringify(this.signals.slice(-5))}`;
  wait<T>(what: string, fn: () => T | undefined | false | null, timeoutMs = 15_000): Promise<T> {
    return waitFor(what, fn, timeoutMs, this.detail);
  }
  created(txid: number): BroadcastSignal[] {
    return this.signals.filter((s) => s.event === 'created' && s.txid === txid);
  }
}

/** A loopback TCP proxy to `port` whose connections can be cut, and new ones refused, at will. */
class CuttableProxy {
  private readonly server: Server;
  private readonly pairs = new Set<[Socket, Socket]>();
  private refusing = false;
  /** Connections forwarded to the server so far. */
  forwarded = 0;
  port = 0;

  constructor(upstreamPort: number) {
    this.server = createServer((down) => {
      if (this.refusing) {
        down.destroy();
        return;
      }
      this.forwarded += 1;
      const up = tcpConnect(upstreamPort, '127.0.0.1');
      const pair: [Socket, Socket] = [down, up];
      this.pairs.add(pair);
      const end = () => {
        this.pairs.delete(pair);
        down.destroy();
        up.destroy();
      };
      down.on('error', end).on('close', end);
      up.on('error', end).on('close', end);
      down.pipe(up);
      up.pipe(down);
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((ok) => this.server.listen(0, '127.0.0.1', ok));
    this.port = (this.server.address() as { port: number }).port;
  }
  /** Destroys every connection (both sides, no close handshake) and refuses new ones. */
  cut(): void {
    this.refusing = true;
    for (const [down, up] of this.pairs) {
      down.destroy();
      up.destroy();
    }
    this.pairs.clear();
  }
  restore(): void {
    this.refusing = false;
  }
  close(): Promise<void> {
    this.cut();
    return new Promise((ok) => this.server.close(() => ok()));
  }
}

describe('BroadcastClient against the real server with authentication on', () => {
  let server: Demo | null = null;
  const clients: BroadcastClient[] = [];

  function watch(url: string, getToken: NonNullable<BroadcastClientOptions['getToken']>): Watched {
    const w = new Watched(url, getToken);
    clients.push(w.client);
    return w;
  }

  /** POST /api/orders with a valid token; the new order's id and the write's txid. */
  async function createOrder(customer: string): Promise<{ id: string; txid: number }> {
    const res = await fetch(`${server!.httpUrl}/api/orders`, {
      method: 'POST',
      headers: { authorization: `Bearer ${longToken()}`, 'content-type': 'application/json' },
      body: JSON.stringify({ customer }),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    expect(res.status, text).toBe(201);
    const body = JSON.parse(text) as { data: { id: number }; txid: number };
    expect(typeof body.txid).toBe('number');
    return { id: String(body.data.id), txid: body.txid };
  }

  beforeAll(async () => {
    ensureBinary();
    server = await startDemo({
      args: [
        '--jwt-secret', SECRET,
        '--jwt-audience', AUDIENCE,
        '--jwt-issuer', ISSUER,
        '--jwt-leeway', '0s',
        '--auth-expiry-notice', `${NOTICE_S}s`,
      ],
    });
    // Tokens with "role": "kitchen" may subscribe to `order` and its entities.
    sql(server.pgUrl, "select broadcast.grant('role', 'kitchen', 'order'), broadcast.grant('role', 'kitchen', 'order:*')");
  }, 300_000);

  afterAll(async () => {
    for (const c of clients) c.disconnect();
    if (server) await stopDemo(server);
  }, 60_000);

  it('authenticates with the token getToken() returns: the topic goes live and signals arrive', async () => {
    const tokens: string[] = [];
    const w = watch(server!.wsUrl, () => {
      tokens.push(longToken());
      return tokens.at(-1)!;
    });
    await w.wait('order live', () => w.live());
    expect(tokens).toHaveLength(1);
    expect(w.sockets()).toHaveLength(1);
    // The token goes out first, and the server takes it.
    expect(w.sockets()[0]!.sentMessages[0]).toEqual({ auth: tokens[0] });
    expect(w.controls.find((f) => f.type === 'welcome')).toMatchObject({ auth: 'required' });
    expect(w.count('authenticated')).toBe(1);
    const order = await createOrder('ada');
    const got = await w.wait('the created signal', () => w.created(order.txid)[0]);
    expect(got).toMatchObject({ channel: 'order', entityId: order.id, resync: false });
    expect(w.closeCodes).toEqual([]);

    // The server checks it: a token signed with another secret is refused with 4001.
    const forged = watch(server!.wsUrl, () => mint(nowS() + 3600, 'another-secret-that-is-32-bytes-or-longer!!'));
    await forged.wait('a close 4001 for the forged token', () => forged.closeCodes.includes(4001));
    expect(forged.count('authenticated')).toBe(0);
    expect(forged.client.topicStatus('order')).toBe('pending');
    forged.client.disconnect();
  });

  it('refreshes the token on auth_expiring and keeps the connection past the old exp', async () => {
    const tokens: { token: string; exp: number }[] = [];
    const w = watch(server!.wsUrl, () => {
      // First a token about to expire (auth_expiring comes at once or within
      // a second), then long ones.
      const exp = tokens.length === 0 ? nowS() + NOTICE_S + 1 : nowS() + 3600;
      tokens.push({ token: mint(exp), exp });
      return tokens.at(-1)!.token;
    });
    await w.wait('order live', () => w.live());
    const oldExp = tokens[0]!.exp;
    await w.wait('auth_expiring', () => w.count('auth_expiring') >= 1);
    await w.wait('a second getToken() call', () => tokens.length >= 2);
    const socket = w.sockets()[0]!;
    await w.wait('the fresh token sent on the same socket', () =>
      socket.sentMessages.some((m) => m.auth === tokens[1]!.token),
    );
    await w.wait('the refresh accepted', () => w.count('authenticated') >= 2);
    // Past the old token's exp (the server counts whole seconds: one more).
    await w.wait('the old token to have expired', () => Date.now() >= (oldExp + 1) * 1000 + 250, 10_000);
    // A write after it is delivered on the very same connection.
    const order = await createOrder('bob');
    await w.wait('the created signal after the old exp', () => w.created(order.txid)[0]);
    expect(w.closeCodes).toEqual([]);
    expect(w.sockets()).toHaveLength(1);
    expect(socket.closeCode).toBeNull();
    expect(w.states.filter((s) => s !== 'open')).toEqual(['connecting']); // only the first connect
    expect(tokens).toHaveLength(2);
  });

  it('after close 4001 asks getToken() again, reconnects and is live again', async () => {
    const tokens: string[] = [];
    let calls = 0;
    let shortExp = 0;
    const w = watch(server!.wsUrl, () => {
      calls += 1;
      // 1: expired (refused at once, 4001); 2: valid for a few seconds;
      // then every refresh fails (each retried with backoff) until that token
      // is past its exp, so the server closes with 4001; after it, a long one.
      if (calls === 1) tokens.push(mint(nowS() - 60));
      else if (calls === 2) {
        shortExp = nowS() + NOTICE_S + 1;
        tokens.push(mint(shortExp));
      } else if (nowS() < shortExp) throw new Error('token endpoint unavailable');
      else tokens.push(longToken());
      return tokens.at(-1)!;
    });
    // The expired token is refused with 4001, and the reconnect takes the short one.
    await w.wait('order live on the short token', () => w.live());
    expect(w.closeCodes).toEqual([4001]);
    expect(w.sockets()[0]!.closeCode).toBe(4001);
    expect(w.sockets()[0]!.sentMessages[0]).toEqual({ auth: tokens[0] });
    expect(w.sockets()[1]!.sentMessages[0]).toEqual({ auth: tokens[1] });
    const firstOrder = await createOrder('cy');
    await w.wait('a signal on the short token', () => w.created(firstOrder.txid)[0]);
    // Its refreshes fail; the server closes at exp with 4001; the client reconnects with a fresh token.
    await w.wait('the second 4001', () => w.closeCodes.length >= 2, 10_000);
    expect(w.closeCodes).toEqual([4001, 4001]);
    expect(w.tokenErrors.length).toBeGreaterThanOrEqual(1);
    await w.wait('order live again on a new connection', () => w.live() && w.sockets().length === 3);
    expect(w.sockets()[1]!.closeCode).toBe(4001);
    expect(w.sockets()[2]!.sentMessages[0]).toEqual({ auth: tokens[2] });
    const order = await createOrder('dee');
    await w.wait('a signal after the reconnect', () => w.created(order.txid)[0]);
    expect(tokens).toHaveLength(3);
    expect(calls).toBe(3 + w.tokenErrors.length);
    expect(w.signals.filter((s) => s.resync)).toEqual([]);
  });

  it('resumes after its TCP connection is cut: what was written meanwhile arrives once, with no resync', async () => {
    const proxy = new CuttableProxy(server!.port);
    await proxy.listen();
    try {
      let tokenCalls = 0;
      const w = watch(`ws://127.0.0.1:${proxy.port}/ws/broadcast`, () => {
        tokenCalls += 1;
        return longToken();
      });
      await w.wait('order live through the proxy', () => w.live());
      const before = await createOrder('before');
      await w.wait('the signal before the cut', () => w.created(before.txid)[0]);

      const forwarded = proxy.forwarded;
      proxy.cut();
      await w.wait('the client to notice the cut', () => w.client.state !== 'open');
      // Written while it cannot connect (the proxy refuses).
      const missed = [await createOrder('missed 1'), await createOrder('missed 2'), await createOrder('missed 3')];
      expect(w.client.state).not.toBe('open');
      expect(proxy.forwarded).toBe(forwarded);
      proxy.restore();

      await w.wait('order live again', () => w.live());
      for (const m of missed) await w.wait(`the missed signal of order ${m.id}`, () => w.created(m.txid)[0]);
      // A write after the reconnect, as a barrier: once it is here, any
      // replayed duplicate or resync would have come before it.
      const after = await createOrder('after');
      await w.wait('the signal after the reconnect', () => w.created(after.txid)[0]);

      const written = [before, ...missed, after];
      expect(w.signals.map((s) => ({ event: s.event, entityId: s.entityId, txid: s.txid, resync: s.resync }))).toEqual(
        written.map((o) => ({ event: 'created', entityId: o.id, txid: o.txid, resync: false })),
      );
      expect(w.closeCodes).toContain(1006);
      expect(tokenCalls).toBeGreaterThanOrEqual(2); // every new connection authenticates
      // The new connection resumed from where the client was before the cut:
      // at or after the last signal it had, before the first it missed.
      const subscribes = w.sockets().at(-1)!.sentMessages.filter((m) => 'subscribe' in m);
      expect(subscribes).toHaveLength(1);
      expect(subscribes[0].subscribe).toEqual(['order']);
      const resume = subscribes[0].resume as { epoch: string; seq: number };
      const beforeSignal = w.created(before.txid)[0]!;
      const firstMissed = w.created(missed[0]!.txid)[0]!;
      expect(resume.epoch).toBe(beforeSignal.epoch);
      expect(resume.seq).toBeGreaterThanOrEqual(beforeSignal.seq as number);
      expect(resume.seq).toBeLessThan(firstMissed.seq as number);
    } finally {
      await proxy.close();
    }
  });
});
