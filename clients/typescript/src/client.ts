/**
 * BroadcastClient: a reconnecting WebSocket client for the pgbroadcast
 * protocol v1 (see the "WebSocket protocol (v1)" section of the server README).
 *
 * Works in browsers (global `WebSocket`) and in Node (inject the `ws` package's
 * `WebSocket` through the `WebSocket` option).
 */

/** Connection state as seen by the application. */
export type ConnectionState = 'connecting' | 'open' | 'closed';

/**
 * A signal's place in its epoch, as the server wrote it: a number in a
 * counted epoch (the `notify` transport), a fixed-width string such as
 * `"00000000016B3748.0000000200000000"` in a WAL epoch (`wal.…`, the `wal`
 * transport), whose text order is its order. Sent back unchanged in `resume`.
 */
export type BroadcastSeq = number | string;

/** Clients with an end-of-tick flush queued (see `BroadcastClient.flushAll`); each leaves it when flushed. */
const pendingFlushes = new Set<BroadcastClient>();

/** An (epoch, seq) pair: where a client is, and where it resumes from. */
export interface BroadcastPosition {
  epoch: string;
  seq: BroadcastSeq;
}

/** What a subscription handler receives. */
export interface BroadcastSignal {
  /** Channel of the signal, e.g. `order`. */
  channel: string;
  /** Event name, e.g. `created`, `item_added`, or `resync`. */
  event: string;
  /**
   * Entity the signal is about. Absent for channel-wide signals (bulk
   * statements, truncates) and for `resync`: "anything in this channel may
   * have changed".
   */
  entityId?: string;
  /** The writing transaction's 32-bit xid (what Electric's `awaitTxId` expects). */
  txid?: number;
  /** The raw payload as sent by the server. */
  payload: Record<string, unknown>;
  /** True for a `resync` frame: invalidate everything on this channel. */
  resync: boolean;
  /** Server sequence number and epoch (absent on `resync`). */
  seq?: BroadcastSeq;
  epoch?: string;
}

export type BroadcastHandler = (signal: BroadcastSignal) => void;

/** Errors surfaced through `onError`. */
export interface BroadcastError {
  /**
   * - `auth`: no token (getToken returned null or no getToken while the server
   *   requires auth) — the client stops (state `closed`);
   * - `token`: getToken threw — the client retries with backoff;
   * - `server`: an `error` control frame (`code`, `message`, `topics`);
   * - `revoked`: the server ended topics with `unsubscribed` reason `revoked`;
   * - `protocol`: a frame that could not be parsed;
   * - `socket`: the WebSocket could not be created (the client stops when
   *   the URL can never work: unparseable, or not ws:/wss:/http:/https:);
   * - `close`: a connection the client wanted ended (`closeCode`, the reason
   *   as `message`): 4001 the token was refused or expired, 1001 the server
   *   shuts down or timed the client out, 1013 too slow, 4000 this client's
   *   heartbeat timeout; the client reconnects;
   * - `limit`: topics held beyond the server's `max_subscriptions` (from the
   *   welcome, or learned from a `subscription_limit` refusal): `topics` names
   *   those that just became `over_limit` (`code` `subscription_limit`).
   */
  kind: 'auth' | 'token' | 'server' | 'revoked' | 'protocol' | 'socket' | 'close' | 'limit';
  message: string;
  code?: string;
  /** `close`: the WebSocket close code. */
  closeCode?: number;
  topics?: string[];
  cause?: unknown;
}

/**
 * Where a held topic stands with the server:
 * - `pending`: waiting for the server's `subscribed` (queued, sent, or waiting
 *   for the connection);
 * - `live`: acknowledged: every signal committed from then on is delivered;
 * - `retrying`: refused for now (`rate_limited`, `authorization_unavailable`,
 *   or dropped with reason `authorization_unavailable`); subscribed again
 *   after a capped backoff;
 * - `over_limit`: held past the connection's `max_subscriptions` (the
 *   welcome's, or lower if the server answered `subscription_limit`): not
 *   sent, reported once through `onError` (kind `limit`), and not retried on
 *   a timer; subscribed, oldest first, as soon as other topics are
 *   unsubscribed and make room (or a new connection allows more). One that
 *   was resumed gets a `resync` once live (what happened meanwhile was not sent);
 * - `forbidden`: not allowed for this token (or not a valid topic); not
 *   retried until the topic is subscribed again or the token changes;
 * - `revoked`: the server ended it (`unsubscribed` reason `revoked`); not
 *   retried until the topic is subscribed again or the token changes.
 */
export type TopicStatus = 'pending' | 'live' | 'retrying' | 'over_limit' | 'forbidden' | 'revoked';

/** Minimal WebSocket surface used by the client (browser WebSocket and `ws` both fit). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason?: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface BackoffOptions {
  /** First reconnect waits up to this long (default 500 ms). */
  baseMs?: number;
  /** Cap for the exponential growth (default 30 000 ms). */
  maxMs?: number;
}

export interface BroadcastClientOptions {
  /** `ws://host:port/ws/broadcast` (or `wss://…`). */
  url: string;
  /** WebSocket constructor; defaults to `globalThis.WebSocket` (pass `ws` in Node 20). */
  WebSocket?: WebSocketConstructor | (new (...args: any[]) => any);
  /**
   * Returns a JWT, or null when the user has none (then the client stops).
   * Called whenever the server's welcome says `"auth": "required"`, on
   * `auth_expiring`, and so after every reconnect (including after close 4001).
   */
  getToken?: () => Promise<string | null> | string | null;
  /** Exponential backoff with full jitter; never gives up. */
  backoff?: BackoffOptions;
  /**
   * Close and reconnect when nothing arrives for this long. Default: 2.5 ×
   * `heartbeat_ms` from the welcome; 75 000 ms before the welcome.
   */
  heartbeatTimeoutMs?: number;
  /** Random source in [0, 1) for jitter (tests). */
  random?: () => number;
}

/** Close codes sent by the server. */
export const CloseCodes = {
  GOING_AWAY: 1001,
  TOO_SLOW: 1013,
  UNAUTHORIZED: 4001,
} as const;

/** Close code used by this client when it drops a connection it considers dead. */
export const CLIENT_HEARTBEAT_CLOSE = 4000;

const DEFAULT_BASE_MS = 500;
const DEFAULT_MAX_MS = 30_000;
const DEFAULT_HEARTBEAT_TIMEOUT_MS = 75_000;
const HEARTBEAT_FACTOR = 2.5;
/** How often the wake-from-sleep check runs while a socket is up. */
const SLEEP_CHECK_MS = 5_000;
/** A wall-clock jump this far beyond SLEEP_CHECK_MS means the machine slept. */
const SLEEP_SLACK_MS = 5_000;
/** `max_channels_per_message` default of the server; chunks larger subscribe lists. */
const DEFAULT_MAX_TOPICS_PER_MESSAGE = 100;
/** `max_subscriptions` default of the server: topics per connection. */
const DEFAULT_MAX_SUBSCRIPTIONS = 1000;
/** `max_messages_per_second` default of the server. */
const DEFAULT_MAX_MESSAGES_PER_SECOND = 50;
/**
 * Share of `max_messages_per_second` the subscription traffic may use: the
 * rest is left for pongs (which count too) and `auth` refreshes.
 */
const MESSAGE_RATE_SHARE = 0.8;
const RATE_WINDOW_MS = 1000;
/** What the server allows in a channel name and an entity id (protocol v1). */
const CHANNEL_RE = /^[A-Za-z0-9_./-]{1,64}$/;
const MAX_ENTITY_BYTES = 256;
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;
const OPEN = 1;

/**
 * Full-jitter exponential backoff: a random delay in [0, min(maxMs, baseMs·2^attempt)].
 * `attempt` is 0 for the first reconnect after a connection was open.
 */
export function backoffDelay(
  attempt: number,
  { baseMs = DEFAULT_BASE_MS, maxMs = DEFAULT_MAX_MS }: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  const exp = Math.min(Math.max(0, attempt), 52);
  const ceiling = Math.min(maxMs, baseMs * 2 ** exp);
  return Math.floor(random() * ceiling);
}

/** Builds a topic string: `channel` or `channel:entityId`. */
export function topicOf(channel: string, entityId?: string | number | null): string {
  return entityId === undefined || entityId === null ? channel : `${channel}:${entityId}`;
}

/** Splits a topic into channel and optional entity id (the first `:` separates them). */
export function parseTopic(topic: string): { channel: string; entityId?: string } {
  const i = topic.indexOf(':');
  return i < 0 ? { channel: topic } : { channel: topic.slice(0, i), entityId: topic.slice(i + 1) };
}

/** A server control frame: has `type`, never `channel`. */
export interface ControlFrame {
  type: string;
  channels?: string[];
  reason?: string;
  code?: string;
  message?: string;
  topics?: string[];
  expires_at?: number;
  [key: string]: unknown;
}

interface Welcome {
  type: 'welcome';
  protocol: number;
  auth?: 'required' | 'none';
  epoch: string;
  seq: BroadcastSeq;
  limits?: {
    heartbeat_ms?: number;
    max_channels_per_message?: number;
    max_messages_per_second?: number;
    max_subscriptions?: number;
    [k: string]: unknown;
  };
}

/** A subscribe or unsubscribe message sent and not yet answered. */
interface InFlight {
  kind: 'subscribe' | 'unsubscribe';
  /** Its topics the server has not answered for yet. */
  topics: Set<string>;
}

export class BroadcastClient {
  private readonly url: string;
  private readonly WS: WebSocketConstructor | undefined;
  private readonly getToken: BroadcastClientOptions['getToken'];
  private readonly backoff: Required<BackoffOptions>;
  private readonly explicitHeartbeatTimeoutMs: number | undefined;
  private readonly random: () => number;

  private socket: WebSocketLike | null = null;
  private _state: ConnectionState = 'closed';
  /** True between connect() and disconnect() (or a fatal auth stop). */
  private wanted = false;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatTimeoutMs: number;
  /** The wake-from-sleep check (runs while a socket is up) and when it last ran. */
  private sleepTimer: ReturnType<typeof setInterval> | null = null;
  private sleepCheckAt = 0;
  private maxTopicsPerMessage = DEFAULT_MAX_TOPICS_PER_MESSAGE;
  private maxMessagesPerSecond = DEFAULT_MAX_MESSAGES_PER_SECOND;
  /**
   * Topics this connection may hold: the welcome's `max_subscriptions`,
   * lowered when the server refuses a subscribe with `subscription_limit`.
   */
  private maxSubscriptions = DEFAULT_MAX_SUBSCRIPTIONS;
  /** Per-connection: welcome seen / authenticated. */
  private welcomed = false;

  /** A token given with setToken(), used instead of getToken() while set. */
  private givenToken: string | null = null;
  /** Stopped because there was no token (setToken() then connects again). */
  private stoppedForAuth = false;
  /** When the last frame arrived (a liveness check when the page becomes visible). */
  private lastFrameAt = 0;
  /** Removes the `online`/`visibilitychange` listeners. */
  private unlisten: (() => void) | null = null;
  /** The browser said `offline`: no reconnect is tried until `online`. */
  private offline = false;

  /** A connection reached `open` before: later subscribes carry `resume`. */
  private everOpen = false;
  /** Close code of the last connection lost (diagnostics). */
  lastCloseCode: number | null = null;

  /** Last (epoch, seq) seen, for `resume`. */
  private last: BroadcastPosition | null = null;

  /** topic → handlers; a topic is on the wire while it has at least one handler. */
  private readonly topics = new Map<string, Set<BroadcastHandler>>();
  /** The status of every held topic. */
  private readonly status = new Map<string, TopicStatus>();
  /** Consecutive temporary refusals per topic, for the retry backoff. */
  private readonly retryAttempts = new Map<string, number>();
  /** `retrying` topic → when to ask again; one timer for the earliest. */
  private readonly retryDue = new Map<string, number>();
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  /** A refresh whose getToken() threw, tried again before the token's exp. */
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  /** Topics the server dropped while live (they get a `resync` once live again). */
  private readonly missed = new Set<string>();
  /** The token last sent: a different one lifts `forbidden` and `revoked`. */
  private token: string | null = null;

  // Per connection: what the server was asked for, and when.
  /** Topics subscribed on this connection (asked or acknowledged) and not unsubscribed. */
  private readonly onWire = new Set<string>();
  /** Subscribe/unsubscribe messages not answered yet, oldest first (the server answers in order). */
  private inFlight: InFlight[] = [];
  /** When this connection's messages of the last second were sent. */
  private sendTimes: number[] = [];
  private pumpTimer: ReturnType<typeof setTimeout> | null = null;
  /** The end-of-tick flush queued and not run yet (a fresh object per queueing). */
  private queuedFlush: object | null = null;

  // Per connection: the resume under way.
  /** The position this connection resumes from; null when not resuming. */
  private resumeFrom: BroadcastPosition | null = null;
  /** Topics sent (or to send) with `resume` whose `subscribed` has not arrived. */
  private readonly resuming = new Set<string>();
  /** Every resume chunk is acknowledged: the next control frame follows their replays. */
  private replayEnding = false;
  /**
   * Send `{"unsubscribe": []}`: its (empty) answer comes after the replays, so
   * the position need not wait for the next heartbeat to move.
   */
  private markerWanted = false;
  /** The newest signal seen while resuming (`last` stays put until the resume is complete). */
  private seen: BroadcastPosition | null = null;
  /** The welcome's position on this connection. */
  private welcomePos: BroadcastPosition | null = null;

  private readonly stateListeners = new Set<(state: ConnectionState) => void>();
  private readonly controlListeners = new Set<(frame: ControlFrame) => void>();
  private readonly errorListeners = new Set<(error: BroadcastError) => void>();
  private readonly statusListeners = new Set<(topic: string, status: TopicStatus) => void>();

  constructor(options: BroadcastClientOptions) {
    if (!options || typeof options.url !== 'string' || options.url === '') {
      throw new TypeError('BroadcastClient: `url` is required (ws://host:port/ws/broadcast)');
    }
    this.url = options.url;
    this.WS = options.WebSocket as WebSocketConstructor | undefined;
    this.getToken = options.getToken;
    this.backoff = {
      baseMs: options.backoff?.baseMs ?? DEFAULT_BASE_MS,
      maxMs: options.backoff?.maxMs ?? DEFAULT_MAX_MS,
    };
    this.explicitHeartbeatTimeoutMs = options.heartbeatTimeoutMs;
    this.heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? DEFAULT_HEARTBEAT_TIMEOUT_MS;
    this.random = options.random ?? Math.random;
  }

  // ---------------------------------------------------------------- public API

  get state(): ConnectionState {
    return this._state;
  }

  /** Number of consecutive failed attempts since the last `open` (0 when open). */
  get reconnectAttempt(): number {
    return this.attempt;
  }

  /** The last (epoch, seq) seen; sent as `resume` after a reconnect. */
  get position(): BroadcastPosition | null {
    return this.last ? { ...this.last } : null;
  }

  /** Topics currently held (those with at least one handler). */
  get subscribedTopics(): string[] {
    return [...this.topics.keys()];
  }

  /** The status of a held topic; undefined when no handler holds it. */
  topicStatus(topic: string): TopicStatus | undefined {
    return this.status.get(topic);
  }

  /**
   * Called with (topic, status) whenever a held topic's status changes
   * (including `pending` when it is first subscribed). Returns the off function.
   */
  onTopicStatus(listener: (topic: string, status: TopicStatus) => void): () => void {
    this.statusListeners.add(listener);
    return () => {
      this.statusListeners.delete(listener);
    };
  }

  onStateChange(listener: (state: ConnectionState) => void): () => void {
    this.stateListeners.add(listener);
    return () => {
      this.stateListeners.delete(listener);
    };
  }

  /**
   * Every control frame (`welcome`, `subscribed`, `unsubscribed`, `error`,
   * `authenticated`, `auth_expiring`, …) as parsed JSON, after the client
   * handled it.
   */
  onControl(listener: (frame: ControlFrame) => void): () => void {
    this.controlListeners.add(listener);
    return () => {
      this.controlListeners.delete(listener);
    };
  }

  onError(listener: (error: BroadcastError) => void): () => void {
    this.errorListeners.add(listener);
    return () => {
      this.errorListeners.delete(listener);
    };
  }

  /** Opens the connection (no-op if already connecting or open). Reconnects forever until `disconnect()`. */
  connect(): void {
    if (this.wanted) return;
    this.wanted = true;
    this.stoppedForAuth = false;
    this.attempt = 0;
    this.listen();
    this.open();
  }

  /** Closes the connection and stops reconnecting. Subscriptions are kept for a later `connect()`. */
  disconnect(): void {
    this.wanted = false;
    this.unlisten?.();
    this.unlisten = null;
    this.clearReconnect();
    this.dropSocket(1000, 'client disconnect');
    this.setState('closed');
  }

  /**
   * Connects again now, without waiting for the backoff: after a stop (no
   * token, `disconnect()`), or to replace the current connection.
   */
  reconnect(): void {
    this.dropSocket(1000, 'client reconnect');
    this.wanted = false;
    this.connect();
  }

  /**
   * The token to authenticate with from now on, instead of asking
   * `getToken()` (null: ask `getToken()` again). Sent at once on an open
   * connection (as a refresh); a client stopped for want of a token
   * connects again (one not connected, or disconnected, stays so).
   */
  setToken(token: string | null): void {
    this.givenToken = token === '' ? null : token;
    if (!this.wanted) {
      if (this.givenToken !== null && this.stoppedForAuth) this.connect();
      return;
    }
    if (this._state === 'open' && this.givenToken !== null && this.token !== null) {
      this.useToken(this.givenToken);
      this.send({ auth: this.givenToken });
      this.scheduleFlush();
    }
  }

  /**
   * Subscribes `handler` to a topic: a channel (`order`: every signal on it) or
   * `channel:entityId` (`order:123`: that entity's signals plus channel-wide
   * ones and `resync`). Returns the unsubscribe function. Topics are
   * refcounted: the first handler subscribes on the wire, the last
   * unsubscribe unsubscribes. Changes are sent at the end of the current
   * tick, batched (a subscribe undone in the same tick sends nothing), and
   * paced under the server's `max_messages_per_second`.
   */
  subscribe(topic: string, handler: BroadcastHandler): () => void {
    if (typeof topic !== 'string' || topic === '') throw new TypeError('subscribe: topic must be a non-empty string');
    if (typeof handler !== 'function') throw new TypeError('subscribe: handler must be a function');
    let handlers = this.topics.get(topic);
    const isNew = !handlers;
    if (!handlers) {
      handlers = new Set();
      this.topics.set(topic, handlers);
    }
    // Wrap so the same function can be subscribed twice and removed independently.
    const entry: BroadcastHandler = (s) => handler(s);
    handlers.add(entry);
    const status = this.status.get(topic);
    if (isNew || status === 'forbidden' || status === 'revoked') {
      // Subscribing again is the app's way to ask once more after a refusal.
      this.retryAttempts.delete(topic);
      this.setStatus(topic, 'pending');
      this.scheduleFlush();
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const set = this.topics.get(topic);
      if (!set) return;
      set.delete(entry);
      if (set.size === 0) {
        this.topics.delete(topic);
        this.status.delete(topic);
        this.retryAttempts.delete(topic);
        this.retryDue.delete(topic);
        this.missed.delete(topic);
        if (this.resuming.delete(topic)) this.checkResumeDone();
        this.scheduleFlush();
      }
    };
  }

  /**
   * Sends the pending subscription changes now instead of at the end of the
   * tick (paced as always: what the rate allows goes now, the rest later).
   * The end-of-tick flush then finds nothing left to do. For tests that read
   * what was sent synchronously; an app never needs it.
   */
  flush(): void {
    this.queuedFlush = null;
    pendingFlushes.delete(this);
    this.pump();
  }

  /** `flush()` on every client with subscription changes waiting for the end of the tick. */
  static flushAll(): void {
    for (const client of [...pendingFlushes]) client.flush();
  }

  // ---------------------------------------------------------------- internals

  private setState(state: ConnectionState): void {
    if (this._state === state) return;
    this._state = state;
    for (const l of [...this.stateListeners]) {
      try {
        l(state);
      } catch (e) {
        reportAsync(e);
      }
    }
  }

  private setStatus(topic: string, status: TopicStatus): void {
    if (!this.topics.has(topic) || this.status.get(topic) === status) return;
    this.status.set(topic, status);
    for (const l of [...this.statusListeners]) {
      try {
        l(topic, status);
      } catch (e) {
        reportAsync(e);
      }
    }
  }

  private emitError(error: BroadcastError): void {
    for (const l of [...this.errorListeners]) {
      try {
        l(error);
      } catch (e) {
        reportAsync(e);
      }
    }
  }

  private open(): void {
    this.clearReconnect();
    this.setState('connecting');
    const WS = this.WS ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      this.wanted = false;
      this.setState('closed');
      this.emitError({
        kind: 'socket',
        message: 'no WebSocket implementation: pass one as the `WebSocket` option (in Node: `import { WebSocket } from "ws"`)',
      });
      return;
    }
    const bad = urlProblem(this.url);
    if (bad) {
      this.stopForUrl(bad);
      return;
    }
    let socket: WebSocketLike;
    try {
      socket = new WS(this.url);
    } catch (cause) {
      // A SyntaxError is the URL: trying again cannot help.
      if ((cause as { name?: unknown } | null)?.name === 'SyntaxError') {
        this.stopForUrl(String(cause), cause);
        return;
      }
      this.emitError({ kind: 'socket', message: `could not open ${this.url}: ${String(cause)}`, cause });
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    this.welcomed = false;
    if (this.explicitHeartbeatTimeoutMs === undefined) this.heartbeatTimeoutMs = DEFAULT_HEARTBEAT_TIMEOUT_MS;

    socket.onopen = () => {
      if (this.socket !== socket) return;
      this.touch();
    };
    socket.onmessage = (ev) => {
      if (this.socket !== socket) return;
      this.touch();
      this.onFrame(ev.data);
    };
    socket.onerror = () => {
      // A close event follows; nothing to do here.
    };
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.onSocketClosed(ev?.code ?? 1006, ev?.reason ?? '');
    };
    // Node `ws`: pings are visible as events (browsers answer them invisibly).
    const emitter = socket as unknown as { on?: (event: string, fn: () => void) => void };
    if (typeof emitter.on === 'function') {
      emitter.on('ping', () => {
        if (this.socket === socket) this.touch();
      });
    }
    this.touch();
  }

  private stopForUrl(problem: string, cause?: unknown): void {
    this.wanted = false;
    this.unlisten?.();
    this.unlisten = null;
    this.setState('closed');
    this.emitError({ kind: 'socket', message: `cannot connect to ${this.url}: ${problem}: stopped`, cause });
  }

  /**
   * In a browser: reconnect at once when the network comes back, and when the
   * page becomes visible (timers of hidden pages are throttled), reconnect at
   * once or check that the connection still carries heartbeats.
   */
  private listen(): void {
    if (this.unlisten) return;
    const win = (globalThis as { window?: EventTarget }).window;
    const doc = (globalThis as { document?: EventTarget & { visibilityState?: string } }).document;
    if (!win || typeof win.addEventListener !== 'function') return;
    const online = () => {
      const was = this.offline;
      this.offline = false;
      if (was && this.wanted && !this.socket && this.reconnectTimer === null) {
        this.attempt = 0;
        this.open();
        return;
      }
      this.wake();
    };
    // The network is gone: the socket cannot carry anything, and retrying
    // before `online` only burns the backoff. Drop it now (its topics go
    // back to pending) rather than after a heartbeat timeout.
    const offline = () => {
      if (!this.wanted) return;
      this.offline = true;
      this.clearReconnect();
      if (this.socket) {
        this.dropSocket(CLIENT_HEARTBEAT_CLOSE, 'offline');
        this.emitError({ kind: 'close', closeCode: CLIENT_HEARTBEAT_CLOSE, message: 'offline' });
        this.afterLoss();
      }
    };
    const visible = () => {
      if (doc?.visibilityState === undefined || doc.visibilityState === 'visible') this.wake();
    };
    win.addEventListener('online', online);
    win.addEventListener('offline', offline);
    doc?.addEventListener?.('visibilitychange', visible);
    this.unlisten = () => {
      win.removeEventListener('online', online);
      win.removeEventListener('offline', offline);
      doc?.removeEventListener?.('visibilitychange', visible);
    };
  }

  private wake(): void {
    if (!this.wanted) return;
    if (this.reconnectTimer !== null) {
      // Waiting out a backoff: the reason to wait may be gone.
      this.attempt = 0;
      this.open();
      return;
    }
    // Open but silent for longer than a heartbeat interval and its slack: dead.
    if (this.socket && this._state === 'open' && Date.now() - this.lastFrameAt > this.heartbeatTimeoutMs / HEARTBEAT_FACTOR * 1.5) {
      this.dropSocket(CLIENT_HEARTBEAT_CLOSE, 'no heartbeat');
      this.emitError({ kind: 'close', closeCode: CLIENT_HEARTBEAT_CLOSE, message: 'no heartbeat' });
      this.attempt = 0;
      this.open();
    }
  }

  /**
   * Wake from sleep (any environment): after a laptop sleeps with the page
   * visible, no event fires and the heartbeat timer only notices after its
   * full timeout. A cheap timer (every SLEEP_CHECK_MS, unref'd in Node) sees
   * the wall clock jump far past its interval; if nothing arrived since
   * before the jump, the connection is replaced at once.
   */
  private watchSleep(): void {
    if (this.sleepTimer !== null) return;
    this.sleepCheckAt = Date.now();
    const timer = setInterval(() => {
      const before = this.sleepCheckAt;
      const now = Date.now();
      this.sleepCheckAt = now;
      if (now - before <= SLEEP_CHECK_MS + SLEEP_SLACK_MS) return;
      if (!this.wanted || !this.socket || this._state !== 'open' || this.lastFrameAt > before) return;
      this.dropSocket(CLIENT_HEARTBEAT_CLOSE, 'woke from sleep');
      this.emitError({ kind: 'close', closeCode: CLIENT_HEARTBEAT_CLOSE, message: 'woke from sleep' });
      this.attempt = 0;
      this.open();
    }, SLEEP_CHECK_MS);
    (timer as { unref?: () => void }).unref?.();
    this.sleepTimer = timer;
  }

  /** Something arrived: restart the heartbeat timer. */
  private touch(): void {
    this.lastFrameAt = Date.now();
    this.watchSleep();
    if (this.heartbeatTimer !== null) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = setTimeout(() => {
      this.heartbeatTimer = null;
      if (!this.socket) return;
      // The connection is considered dead: drop it without waiting for a close handshake.
      this.dropSocket(CLIENT_HEARTBEAT_CLOSE, 'heartbeat timeout');
      if (this.wanted) this.emitError({ kind: 'close', closeCode: CLIENT_HEARTBEAT_CLOSE, message: 'heartbeat timeout' });
      this.afterLoss();
    }, this.heartbeatTimeoutMs);
  }

  private onSocketClosed(code: number, reason: string): void {
    this.detach();
    this.socket = null;
    if (!this.wanted) {
      this.setState('closed');
      return;
    }
    // 4001 (unauthorized/expired), 1001 (shutdown/heartbeat), 1013 (too slow), anything else:
    // reconnect with backoff; the welcome then asks getToken() for a fresh token.
    this.lastCloseCode = code;
    this.emitError({ kind: 'close', closeCode: code, message: reason || `connection closed with code ${code}` });
    this.afterLoss();
  }

  private afterLoss(): void {
    if (!this.wanted) {
      this.setState('closed');
      return;
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    this.clearReconnect();
    this.setState('connecting');
    if (this.offline) return; // `online` reconnects
    const delay = backoffDelay(this.attempt, this.backoff, this.random);
    this.attempt += 1;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.wanted) this.open();
    }, delay);
  }

  private clearReconnect(): void {
    if (this.reconnectTimer !== null) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }
  }

  private clearRefresh(): void {
    if (this.refreshTimer !== null) {
      clearTimeout(this.refreshTimer);
      this.refreshTimer = null;
    }
  }

  private detach(): void {
    this.clearRefresh();
    if (this.heartbeatTimer !== null) {
      clearTimeout(this.heartbeatTimer);
      this.heartbeatTimer = null;
    }
    if (this.sleepTimer !== null) {
      clearInterval(this.sleepTimer);
      this.sleepTimer = null;
    }
    this.resetConnection();
    const s = this.socket;
    if (s) {
      s.onopen = null;
      s.onmessage = null;
      s.onclose = null;
      s.onerror = () => {};
    }
  }

  /**
   * The server forgets a connection's subscriptions with it: every topic not
   * refused for good waits for the next connection. A resume not complete
   * leaves `last` where it was, so the next one covers the same ground.
   */
  private resetConnection(): void {
    this.onWire.clear();
    this.inFlight = [];
    this.sendTimes = [];
    if (this.pumpTimer !== null) {
      clearTimeout(this.pumpTimer);
      this.pumpTimer = null;
    }
    this.retryDue.clear();
    this.armRetry();
    this.resumeFrom = null;
    this.resuming.clear();
    this.replayEnding = false;
    this.markerWanted = false;
    this.seen = null;
    this.welcomePos = null;
    for (const [topic, status] of this.status) {
      if (status === 'live' || status === 'retrying') this.setStatus(topic, 'pending');
    }
  }

  private dropSocket(code: number, reason: string): void {
    const s = this.socket;
    this.detach();
    this.socket = null;
    if (!s) return;
    try {
      const term = (s as unknown as { terminate?: () => void }).terminate;
      if (code === CLIENT_HEARTBEAT_CLOSE && typeof term === 'function') term.call(s);
      else s.close(code, reason);
    } catch {
      // Already closed or closing.
    }
  }

  private send(msg: unknown): void {
    const s = this.socket;
    if (!s || s.readyState !== OPEN) return;
    try {
      this.sendTimes.push(Date.now());
      s.send(JSON.stringify(msg));
    } catch (cause) {
      this.emitError({ kind: 'socket', message: `send failed: ${String(cause)}`, cause });
    }
  }

  /** Sends the subscription changes of this tick once it ends (or at an earlier `flush()`). */
  private scheduleFlush(): void {
    if (this.queuedFlush) return;
    const token = {};
    this.queuedFlush = token;
    pendingFlushes.add(this);
    queueMicrotask(() => {
      // Run once: not if flush() ran it early (a later change queues its own).
      if (this.queuedFlush === token) this.flush();
    });
  }

  /**
   * Brings the server's subscriptions in line with the held topics: what
   * changed since the last message is computed when a message can be sent,
   * so changes that cancel out never reach the wire. At most
   * MESSAGE_RATE_SHARE × `max_messages_per_second` messages (auth included)
   * go out in any second: the server drops what exceeds its rate, and a
   * dropped subscribe would leave a topic the client counts on unheld.
   */
  private pump(): void {
    if (this._state !== 'open' || this.pumpTimer !== null) return;
    const limit = Math.max(1, Math.floor(this.maxMessagesPerSecond * MESSAGE_RATE_SHARE));
    for (;;) {
      const unsubscribe = [...this.onWire].filter((t) => !this.topics.has(t));
      const resume: string[] = [];
      const plain: string[] = [];
      // Room under max_subscriptions once the unsubscribes (sent first) are
      // out; `retrying` topics keep the room they had.
      let retrying = 0;
      for (const s of this.status.values()) if (s === 'retrying') retrying += 1;
      const room = this.maxSubscriptions - (this.onWire.size - unsubscribe.length) - retrying;
      const over: string[] = [];
      for (const topic of this.topics.keys()) {
        const status = this.status.get(topic);
        if ((status !== 'pending' && status !== 'over_limit') || this.onWire.has(topic)) continue;
        if (!validTopic(topic)) {
          // The server would refuse the whole message it is in.
          if (this.resuming.delete(topic)) this.checkResumeDone();
          this.setStatus(topic, 'forbidden');
          continue;
        }
        // Oldest first (the order the app asked for them): the rest wait for room.
        if (resume.length + plain.length >= room) {
          if (status === 'pending') over.push(topic);
          continue;
        }
        if (status === 'over_limit') this.setStatus(topic, 'pending');
        (this.resuming.has(topic) ? resume : plain).push(topic);
      }
      if (over.length > 0) this.overLimit(over);
      if (!this.markerWanted && unsubscribe.length === 0 && resume.length === 0 && plain.length === 0) return;
      const now = Date.now();
      while (this.sendTimes.length > 0 && this.sendTimes[0]! <= now - RATE_WINDOW_MS) this.sendTimes.shift();
      if (this.sendTimes.length >= limit) {
        this.pumpTimer = setTimeout(() => {
          this.pumpTimer = null;
          this.pump();
        }, this.sendTimes[0]! + RATE_WINDOW_MS - now);
        return;
      }
      const max = this.maxTopicsPerMessage;
      if (this.markerWanted) {
        this.markerWanted = false;
        this.send({ unsubscribe: [] });
        continue;
      }
      let msg: Record<string, unknown>;
      let entry: InFlight;
      if (unsubscribe.length > 0) {
        const chunk = unsubscribe.slice(0, max);
        for (const t of chunk) this.onWire.delete(t);
        msg = { unsubscribe: chunk };
        entry = { kind: 'unsubscribe', topics: new Set(chunk) };
      } else {
        // Every resume chunk carries the same position: `last` does not move until all are answered.
        const chunk = (resume.length > 0 ? resume : plain).slice(0, max);
        for (const t of chunk) this.onWire.add(t);
        msg = { subscribe: chunk };
        if (resume.length > 0 && this.resumeFrom) msg.resume = { epoch: this.resumeFrom.epoch, seq: this.resumeFrom.seq };
        entry = { kind: 'subscribe', topics: new Set(chunk) };
      }
      this.inFlight.push(entry);
      this.send(msg);
    }
  }

  /**
   * Marks part of the oldest matching message answered. Answers come in the
   * order of the messages, so a message before it that got no answer at all
   * was dropped by the server's rate limit.
   */
  private answered(kind: InFlight['kind'], topics: string[]): void {
    const first = topics[0];
    if (first === undefined) return;
    const i = this.inFlight.findIndex((m) => m.kind === kind && m.topics.has(first));
    if (i < 0) return;
    for (const m of this.inFlight.splice(0, i)) this.lost(m);
    const m = this.inFlight[0]!;
    for (const t of topics) m.topics.delete(t);
    if (m.topics.size === 0) this.inFlight.shift();
  }

  /** A message the server did not apply: ask again. */
  private lost(m: InFlight): void {
    if (m.kind === 'unsubscribe') {
      for (const t of m.topics) if (!this.topics.has(t)) this.onWire.add(t);
      this.scheduleFlush();
      return;
    }
    this.retryLater([...m.topics].filter((t) => this.status.get(t) === 'pending'));
  }

  /**
   * How long to wait before asking again after `attempt` failures: at least
   * baseMs (a refusal or failure answered at once would be repeated at
   * once), plus the jittered backoff.
   */
  private retryDelay(attempt: number): number {
    return this.backoff.baseMs + backoffDelay(attempt, this.backoff, this.random);
  }

  /** A temporary refusal: `retrying`, then subscribed again after a capped backoff. */
  private retryLater(topics: string[]): void {
    const held = topics.filter((t) => this.topics.has(t));
    if (held.length === 0) return;
    let attempt = 0;
    for (const t of held) attempt = Math.max(attempt, this.retryAttempts.get(t) ?? 0);
    const due = Date.now() + this.retryDelay(attempt);
    for (const t of held) {
      this.onWire.delete(t);
      this.retryAttempts.set(t, attempt + 1);
      this.retryDue.set(t, due);
      this.setStatus(t, 'retrying');
    }
    this.armRetry();
  }

  private armRetry(): void {
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    if (this.retryDue.size === 0) return;
    const next = Math.min(...this.retryDue.values());
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      const now = Date.now();
      for (const [t, due] of this.retryDue) {
        if (due > now) continue;
        this.retryDue.delete(t);
        if (this.status.get(t) === 'retrying') this.setStatus(t, 'pending');
      }
      this.armRetry();
      this.scheduleFlush();
    }, Math.max(0, next - Date.now()));
  }

  /**
   * Held past `max_subscriptions`: not sent (nor retried on a timer) until
   * room frees up; reported once. A topic being resumed gives up its resume
   * (the position must not wait for it) and gets a `resync` once live.
   */
  private overLimit(topics: string[]): void {
    const held = topics.filter((t) => this.topics.has(t) && this.status.get(t) !== 'over_limit');
    for (const t of held) {
      this.onWire.delete(t);
      this.retryAttempts.delete(t);
      this.retryDue.delete(t);
      if (this.resuming.delete(t)) this.missed.add(t);
      this.setStatus(t, 'over_limit');
    }
    this.checkResumeDone();
    if (held.length === 0) return;
    this.emitError({
      kind: 'limit',
      code: 'subscription_limit',
      message:
        `${held.length} topic(s) over the limit of ${this.maxSubscriptions} subscriptions per connection, ` +
        `subscribed once others are unsubscribed: ${held.join(', ')}`,
      topics: held,
    });
  }

  /** The server does not hold these topics and will not take them until asked anew. */
  private refused(topics: string[], status: 'forbidden' | 'revoked'): void {
    for (const t of topics) {
      this.onWire.delete(t);
      if (!this.topics.has(t)) continue;
      this.retryAttempts.delete(t);
      this.retryDue.delete(t);
      this.resuming.delete(t);
      this.setStatus(t, status);
    }
    this.checkResumeDone();
    // Room for topics waiting over the limit.
    this.scheduleFlush();
  }

  private onSubscribed(channels: string[]): void {
    this.answered('subscribe', channels);
    for (const t of channels) {
      if (!this.topics.has(t)) {
        // Dropped by the app meanwhile: unless its unsubscribe is on the way,
        // the server holds a topic nobody wants (a late answer to a message
        // counted as lost).
        if (!this.inFlight.some((m) => m.kind === 'unsubscribe' && m.topics.has(t))) {
          this.onWire.add(t);
          this.scheduleFlush();
        }
        continue;
      }
      this.onWire.add(t);
      this.retryAttempts.delete(t);
      this.retryDue.delete(t);
      this.resuming.delete(t);
      this.setStatus(t, 'live');
      if (this.missed.delete(t)) this.deliverGap(t);
    }
    this.checkResumeDone();
  }

  /**
   * A topic the server dropped is live again: what happened in between was
   * not sent, so its handlers get a `resync` (reason `resubscribed`).
   */
  private deliverGap(topic: string): void {
    const { channel } = parseTopic(topic);
    const signal: BroadcastSignal = { channel, event: 'resync', payload: { reason: 'resubscribed' }, resync: true };
    for (const h of [...(this.topics.get(topic) ?? [])]) {
      try {
        h(signal);
      } catch (e) {
        reportAsync(e);
      }
    }
  }

  /** Every resume chunk is answered: once their replays are through, the position may move. */
  private checkResumeDone(): void {
    if (!this.resumeFrom || this.resuming.size > 0 || this.replayEnding) return;
    this.replayEnding = true;
    this.markerWanted = true;
    this.scheduleFlush();
  }

  /**
   * The resume is complete: every topic has what was missed since
   * `resumeFrom`, and everything up to the welcome's seq. The position is
   * the newest of those and of what arrived since, so quiet topics do not
   * hold it back, and a new epoch (the server restarted) is adopted.
   */
  private commitResume(): void {
    const from = this.resumeFrom;
    if (!from) return;
    let pos = this.welcomePos ?? from;
    // A node behind the one the client came from: keep the further point.
    if (from.epoch === pos.epoch && seqAfter(from.seq, pos.seq)) pos = from;
    if (this.seen) pos = newerPosition(pos, this.seen.epoch, this.seen.seq);
    this.last = { ...pos };
    this.resumeFrom = null;
    this.replayEnding = false;
    this.markerWanted = false;
    this.seen = null;
  }

  private onFrame(data: unknown): void {
    let text: string;
    if (typeof data === 'string') text = data;
    else if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) text = new TextDecoder().decode(data as ArrayBuffer);
    else text = String(data);
    let frame: any;
    try {
      frame = JSON.parse(text);
    } catch (cause) {
      this.emitError({ kind: 'protocol', message: 'frame is not JSON', cause });
      return;
    }
    if (!frame || typeof frame !== 'object') return;
    if (typeof frame.channel === 'string') {
      this.onSignal(frame);
      return;
    }
    this.handleControl(frame as ControlFrame);
    for (const l of [...this.controlListeners]) {
      try {
        l(frame as ControlFrame);
      } catch (e) {
        reportAsync(e);
      }
    }
  }

  private handleControl(frame: any): void {
    // Frames come in order: one after the last resume ack follows its replay.
    if (this.replayEnding) this.commitResume();
    switch (frame.type) {
      case 'welcome':
        void this.onWelcome(frame as Welcome);
        return;
      case 'authenticated':
        if (this.welcomed && this._state !== 'open') this.becomeOpen();
        return;
      case 'auth_expiring':
        void this.refreshToken(
          typeof frame.expires_at === 'number' ? frame.expires_at * 1000 : undefined,
          0,
        );
        return;
      case 'heartbeat':
        // Everything up to the node's position that concerns this connection
        // came before it: quiet topics move along and stay resumable.
        if (isSeq(frame.seq) && typeof frame.epoch === 'string') this.reached(frame.epoch, frame.seq);
        return;
      case 'subscribed':
        this.onSubscribed(stringList(frame.channels));
        return;
      case 'unsubscribed': {
        const channels = stringList(frame.channels);
        if (frame.reason === undefined || frame.reason === null) {
          this.answered('unsubscribe', channels);
          return;
        }
        // What the server dropped while live misses signals until it is live again.
        for (const t of channels) if (this.status.get(t) === 'live') this.missed.add(t);
        if (frame.reason === 'revoked') {
          this.refused(channels, 'revoked');
          this.emitError({
            kind: 'revoked',
            message: `subscription revoked: ${channels.join(', ')}`,
            topics: frame.channels,
          });
        } else {
          // `authorization_unavailable` (the claims could not be checked) or a
          // reason this client does not know: dropped for now, not for good.
          this.retryLater(channels);
        }
        return;
      }
      case 'error':
        this.onServerError(frame);
        this.emitError({
          kind: 'server',
          code: frame.code,
          message: String(frame.message ?? frame.code),
          topics: frame.topics,
        });
        return;
      default:
        // Unknown control frames: nothing to do.
        return;
    }
  }

  private onServerError(frame: ControlFrame): void {
    const topics = stringList(frame.topics);
    switch (frame.code) {
      case 'forbidden':
        this.answered('subscribe', topics);
        this.refused(topics, 'forbidden');
        return;
      case 'rate_limited':
        // Some messages were dropped, and which ones cannot be told from
        // answers still to come: ask again for all that are unanswered (a
        // subscribe or unsubscribe repeated is harmless).
        for (const m of this.inFlight.splice(0)) this.lost(m);
        return;
      case 'subscription_limit': {
        // The oldest unanswered message would take the connection past the
        // server's limit (lower than the welcome said, or counted otherwise):
        // nothing of it was applied. What the server held then is all it
        // takes on this connection; the message's topics wait for room.
        const m = this.inFlight.shift();
        if (!m) return;
        if (m.kind === 'unsubscribe') {
          this.lost(m);
          return;
        }
        for (const t of m.topics) this.onWire.delete(t);
        let held = this.onWire.size;
        for (const later of this.inFlight) {
          for (const t of later.topics) {
            if (later.kind === 'unsubscribe') held += 1;
            else if (this.onWire.has(t)) held -= 1;
          }
        }
        this.maxSubscriptions = Math.max(0, Math.min(this.maxSubscriptions, held));
        this.overLimit([...m.topics].filter((t) => this.status.get(t) === 'pending'));
        return;
      }
      case 'authorization_unavailable':
      case 'too_many_channels':
      case 'message_too_large':
      case 'invalid_message':
      case 'invalid_channel':
      case 'auth_required': {
        // The answer to the oldest unanswered message: nothing of it was applied.
        const m = this.inFlight.shift();
        if (m) this.lost(m);
        return;
      }
      default:
        return;
    }
  }

  private async onWelcome(welcome: Welcome): Promise<void> {
    const socket = this.socket;
    this.welcomed = true;
    const hb = welcome.limits?.heartbeat_ms;
    if (this.explicitHeartbeatTimeoutMs === undefined && typeof hb === 'number' && hb > 0) {
      this.heartbeatTimeoutMs = HEARTBEAT_FACTOR * hb;
      this.touch();
    }
    const maxPer = welcome.limits?.max_channels_per_message;
    if (typeof maxPer === 'number' && maxPer > 0) this.maxTopicsPerMessage = maxPer;
    const rate = welcome.limits?.max_messages_per_second;
    if (typeof rate === 'number' && rate > 0) this.maxMessagesPerSecond = rate;
    // Per connection: a limit learned from a refusal lasts until the next welcome.
    const maxSubs = welcome.limits?.max_subscriptions;
    this.maxSubscriptions = typeof maxSubs === 'number' && maxSubs > 0 ? maxSubs : DEFAULT_MAX_SUBSCRIPTIONS;
    if (typeof welcome.epoch === 'string' && isSeq(welcome.seq)) this.welcomePos = { epoch: welcome.epoch, seq: welcome.seq };
    // With nothing to resume, the welcome's position is where we start.
    if (!this.last || this.topics.size === 0) this.last = { epoch: welcome.epoch, seq: welcome.seq };

    if (welcome.auth !== 'required') {
      this.becomeOpen();
      return;
    }
    const token = await this.fetchToken();
    if (this.socket !== socket || !socket) return; // closed meanwhile
    if (token === undefined) {
      // getToken threw: retry later.
      this.dropSocket(1000, 'no token');
      this.afterLoss();
      return;
    }
    if (token === null) {
      this.stopForAuth();
      return;
    }
    this.useToken(token);
    this.send({ auth: token });
    // `open` on the server's `authenticated`.
  }

  /** Returns the token, null for "none" (stop), undefined when getToken threw. */
  private async fetchToken(): Promise<string | null | undefined> {
    if (this.givenToken !== null) return this.givenToken;
    if (!this.getToken) return null;
    try {
      const t = await this.getToken();
      return typeof t === 'string' && t !== '' ? t : null;
    } catch (cause) {
      this.emitError({ kind: 'token', message: `getToken failed: ${String(cause)}`, cause });
      return undefined;
    }
  }

  /**
   * Fetches a token for the open connection. A getToken() that throws is
   * tried again with backoff while the current token (valid until
   * `expiresAtMs`) still holds the connection; past that the server closes
   * it with 4001 and the reconnect asks again.
   */
  private async refreshToken(expiresAtMs: number | undefined, attempt: number): Promise<void> {
    this.clearRefresh();
    const socket = this.socket;
    const token = await this.fetchToken();
    if (this.socket !== socket || !socket) return;
    if (token === undefined) {
      const delay = this.retryDelay(attempt);
      if (expiresAtMs !== undefined && Date.now() + delay < expiresAtMs) {
        this.refreshTimer = setTimeout(() => {
          this.refreshTimer = null;
          void this.refreshToken(expiresAtMs, attempt + 1);
        }, delay);
      }
      return;
    }
    if (token === null) {
      this.stopForAuth();
      return;
    }
    this.useToken(token);
    this.send({ auth: token });
    // Topics lifted by a new token are asked for under it (the server takes messages in order).
    this.scheduleFlush();
  }

  /** New claims may allow what the old ones did not: `forbidden` and `revoked` are asked for again. */
  private useToken(token: string): void {
    if (this.token !== null && token !== this.token) {
      for (const [topic, status] of this.status) {
        if (status !== 'forbidden' && status !== 'revoked') continue;
        this.retryAttempts.delete(topic);
        this.setStatus(topic, 'pending');
      }
    }
    this.token = token;
  }

  private stopForAuth(): void {
    this.stoppedForAuth = true;
    this.unlisten?.();
    this.unlisten = null;
    const message = this.getToken
      ? 'the server requires authentication and getToken() returned no token: stopped'
      : 'the server requires authentication and no getToken option was given: stopped';
    this.wanted = false;
    this.clearReconnect();
    this.dropSocket(1000, 'no token');
    this.setState('closed');
    this.emitError({ kind: 'auth', message });
  }

  private becomeOpen(): void {
    this.attempt = 0;
    // After a reconnect: resume from the last position seen on the previous connection(s).
    if (this.everOpen && this.last) {
      this.resumeFrom = { ...this.last };
      for (const [topic, status] of this.status) if (status === 'pending') this.resuming.add(topic);
      // Nothing to resume: the welcome's position (a new epoch after a server restart) is where we are.
      if (this.resuming.size === 0) this.commitResume();
    }
    this.everOpen = true;
    this.setState('open');
    this.pump();
  }

  /**
   * The connection has everything up to (epoch, seq): a signal's position,
   * or a heartbeat's. The resume point is the newest seen on this epoch.
   * Frames are not dropped by seq: the server never sends one twice on a
   * connection, and a resume split over several messages replays each part
   * from the same point, so older seqs can legitimately follow newer ones.
   * While a resume is under way the point stays where it was: a connection
   * lost before every part is answered must resume all of them from there.
   */
  private reached(epoch: string, seq: BroadcastSeq): void {
    if (this.resumeFrom) this.seen = newerPosition(this.seen, epoch, seq);
    else this.last = newerPosition(this.last, epoch, seq);
  }

  private onSignal(frame: {
    channel: string;
    event?: string;
    payload?: Record<string, unknown>;
    seq?: BroadcastSeq;
    epoch?: string;
  }): void {
    const payload = frame.payload && typeof frame.payload === 'object' ? frame.payload : {};
    const resync = frame.event === 'resync';
    const seq = isSeq(frame.seq) ? frame.seq : undefined;
    if (seq !== undefined && typeof frame.epoch === 'string') this.reached(frame.epoch, seq);
    const rawEntity = payload.entity_id;
    const entityId =
      resync || rawEntity === undefined || rawEntity === null ? undefined : String(rawEntity as string | number);
    const rawTxid = payload.txid;
    const signal: BroadcastSignal = {
      channel: frame.channel,
      event: String(frame.event ?? ''),
      payload,
      resync,
      ...(entityId !== undefined ? { entityId } : {}),
      ...(typeof rawTxid === 'number' ? { txid: rawTxid } : {}),
      ...(seq !== undefined ? { seq } : {}),
      ...(typeof frame.epoch === 'string' ? { epoch: frame.epoch } : {}),
    };
    const targets: BroadcastHandler[] = [];
    const channelHandlers = this.topics.get(frame.channel);
    if (channelHandlers) targets.push(...channelHandlers);
    if (entityId !== undefined) {
      const entityHandlers = this.topics.get(topicOf(frame.channel, entityId));
      if (entityHandlers) targets.push(...entityHandlers);
    } else {
      // Channel-wide signal or resync: every entity topic of the channel too.
      const prefix = `${frame.channel}:`;
      for (const [topic, handlers] of this.topics) if (topic.startsWith(prefix)) targets.push(...handlers);
    }
    for (const h of targets) {
      try {
        h(signal);
      } catch (e) {
        reportAsync(e);
      }
    }
  }

}

/** `current`, or (epoch, seq) if that is newer in the same epoch or of another epoch. */
function newerPosition(current: BroadcastPosition | null, epoch: string, seq: BroadcastSeq): BroadcastPosition {
  return !current || current.epoch !== epoch || seqAfter(seq, current.seq) ? { epoch, seq } : current;
}

function stringList(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

/**
 * A topic the server accepts: channel of 1–64 of `A-Z a-z 0-9 _ . / -`,
 * entity id of 1–256 bytes without control characters.
 */
function validTopic(topic: string): boolean {
  const { channel, entityId } = parseTopic(topic);
  if (!CHANNEL_RE.test(channel)) return false;
  if (entityId === undefined) return true;
  const bytes = new TextEncoder().encode(entityId).length;
  return bytes > 0 && bytes <= MAX_ENTITY_BYTES && !CONTROL_RE.test(entityId);
}

/** Why `url` can never be connected to, or null. */
function urlProblem(url: string): string | null {
  let parsed: URL;
  try {
    // Browsers resolve a relative URL against the page.
    const base = (globalThis as { location?: { href?: string } }).location?.href;
    parsed = base ? new URL(url, base) : new URL(url);
  } catch {
    return 'not a URL';
  }
  // Browsers take http(s) URLs for WebSockets too.
  if (!['ws:', 'wss:', 'http:', 'https:'].includes(parsed.protocol)) return `scheme ${parsed.protocol} is not ws: or wss:`;
  return null;
}

function isSeq(value: unknown): value is BroadcastSeq {
  return typeof value === 'number' || typeof value === 'string';
}

/**
 * Is `a` after `b` in their epoch? Numbers compare as numbers, WAL positions
 * as text (fixed width, so text order is their order); a number and a string
 * are not ordered (one epoch's seqs are all of one kind).
 */
function seqAfter(a: BroadcastSeq, b: BroadcastSeq): boolean {
  if (typeof a === 'number' && typeof b === 'number') return a > b;
  if (typeof a === 'string' && typeof b === 'string') return a > b;
  return false;
}

function reportAsync(e: unknown): void {
  // A throwing listener must not break the client or the other listeners.
  console.error('pgbroadcast: a listener threw', e);
}

// -------------------------------------------------------------- singleton API

let singleton: BroadcastClient | null = null;

export interface InitBroadcastOptions extends BroadcastClientOptions {
  /**
   * When to connect. `"lazy"` (default): on the first subscription in a
   * browser, so calling `initBroadcast` at module scope opens nothing at
   * import time nor during a server render. `true`: now (e.g. a Node script).
   * `false`: only when you call `connect()`.
   */
  connect?: boolean | 'lazy';
}

function inBrowser(): boolean {
  return typeof window !== 'undefined' && typeof document !== 'undefined';
}

/**
 * A client that connects on its first subscription in a browser: hooks
 * subscribe in effects, which never run on the server, so this is "first
 * client-side use". An explicit connect() or disconnect() ends the laziness.
 */
class LazyBroadcastClient extends BroadcastClient {
  private lazyConnect = true;
  override subscribe(topic: string, handler: BroadcastHandler): () => void {
    if (this.lazyConnect && inBrowser()) {
      this.lazyConnect = false;
      super.connect();
    }
    return super.subscribe(topic, handler);
  }
  override connect(): void {
    this.lazyConnect = false;
    super.connect();
  }
  override disconnect(): void {
    this.lazyConnect = false;
    super.disconnect();
  }
}

/**
 * A client that connects `connect`: `"lazy"` on its first subscription in a
 * browser (never on a server), `true` now, `false` when `connect()` is called.
 * What `initBroadcast` and the TanStack `configureSync` create.
 */
export function createBroadcastClient(options: BroadcastClientOptions, connect: boolean | 'lazy' = 'lazy'): BroadcastClient {
  const client = connect === 'lazy' ? new LazyBroadcastClient(options) : new BroadcastClient(options);
  if (connect === true) client.connect();
  return client;
}

/**
 * Creates the module-level client. Safe at module scope: by default nothing
 * connects until the first subscription in a browser (see `connect`). A
 * second call replaces (and disconnects) the first.
 */
export function initBroadcast(options: InitBroadcastOptions): BroadcastClient {
  if (singleton) singleton.disconnect();
  const { connect = 'lazy', ...clientOptions } = options;
  singleton = createBroadcastClient(clientOptions, connect);
  return singleton;
}

/** The client created by `initBroadcast`; throws if it was not called. */
export function getBroadcastClient(): BroadcastClient {
  if (!singleton) {
    throw new Error('pgbroadcast: initBroadcast({ url }) must be called before getBroadcastClient() / subscribeToBroadcast()');
  }
  return singleton;
}

/** `getBroadcastClient().subscribe(channel, handler)`. */
export function subscribeToBroadcast(channel: string, handler: BroadcastHandler): () => void {
  return getBroadcastClient().subscribe(channel, handler);
}

/** Disconnects and forgets the singleton (tests, hot reload). */
export function resetBroadcast(): void {
  if (singleton) singleton.disconnect();
  singleton = null;
}
