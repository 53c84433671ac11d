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
   * - `socket`: the WebSocket could not be created.
   */
  kind: 'auth' | 'token' | 'server' | 'revoked' | 'protocol' | 'socket';
  message: string;
  code?: string;
  topics?: string[];
  cause?: unknown;
}

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
/** `max_channels_per_message` default of the server; chunks larger subscribe lists. */
const DEFAULT_MAX_TOPICS_PER_MESSAGE = 100;
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
  limits?: { heartbeat_ms?: number; max_channels_per_message?: number; [k: string]: unknown };
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
  private maxTopicsPerMessage = DEFAULT_MAX_TOPICS_PER_MESSAGE;
  /** Per-connection: welcome seen / authenticated. */
  private welcomed = false;

  /** A connection reached `open` before: later subscribes carry `resume`. */
  private everOpen = false;
  /** Close code of the last connection lost (diagnostics). */
  lastCloseCode: number | null = null;

  /** Last (epoch, seq) seen, for `resume`. */
  private last: BroadcastPosition | null = null;

  /** topic → handlers; a topic is on the wire while it has at least one handler. */
  private readonly topics = new Map<string, Set<BroadcastHandler>>();
  private readonly stateListeners = new Set<(state: ConnectionState) => void>();
  private readonly controlListeners = new Set<(frame: ControlFrame) => void>();
  private readonly errorListeners = new Set<(error: BroadcastError) => void>();

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
    this.attempt = 0;
    this.open();
  }

  /** Closes the connection and stops reconnecting. Subscriptions are kept for a later `connect()`. */
  disconnect(): void {
    this.wanted = false;
    this.clearReconnect();
    this.dropSocket(1000, 'client disconnect');
    this.setState('closed');
  }

  /**
   * Subscribes `handler` to a topic: a channel (`order`: every signal on it) or
   * `channel:entityId` (`order:123`: that entity's signals plus channel-wide
   * ones and `resync`). Returns the unsubscribe function. Topics are
   * refcounted: the first handler subscribes on the wire, the last
   * unsubscribe unsubscribes.
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
    if (isNew && this._state === 'open') this.sendTopics('subscribe', [topic], false);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const set = this.topics.get(topic);
      if (!set) return;
      set.delete(entry);
      if (set.size === 0) {
        this.topics.delete(topic);
        if (this._state === 'open') this.sendTopics('unsubscribe', [topic], false);
      }
    };
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
    let socket: WebSocketLike;
    try {
      socket = new WS(this.url);
    } catch (cause) {
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
      this.onSocketClosed(ev?.code ?? 1006);
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

  /** Something arrived: restart the heartbeat timer. */
  private touch(): void {
    if (this.heartbeatTimer !== null) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = setTimeout(() => {
      this.heartbeatTimer = null;
      if (!this.socket) return;
      // The connection is considered dead: drop it without waiting for a close handshake.
      this.dropSocket(CLIENT_HEARTBEAT_CLOSE, 'heartbeat timeout');
      this.afterLoss();
    }, this.heartbeatTimeoutMs);
  }

  private onSocketClosed(code: number): void {
    this.detach();
    this.socket = null;
    if (!this.wanted) {
      this.setState('closed');
      return;
    }
    // 4001 (unauthorized/expired), 1001 (shutdown/heartbeat), 1013 (too slow), anything else:
    // reconnect with backoff; the welcome then asks getToken() for a fresh token.
    this.lastCloseCode = code;
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

  private detach(): void {
    if (this.heartbeatTimer !== null) {
      clearTimeout(this.heartbeatTimer);
      this.heartbeatTimer = null;
    }
    const s = this.socket;
    if (s) {
      s.onopen = null;
      s.onmessage = null;
      s.onclose = null;
      s.onerror = () => {};
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
      s.send(JSON.stringify(msg));
    } catch (cause) {
      this.emitError({ kind: 'socket', message: `send failed: ${String(cause)}`, cause });
    }
  }

  private sendTopics(kind: 'subscribe' | 'unsubscribe', topics: string[], withResume: boolean): void {
    for (let i = 0; i < topics.length; i += this.maxTopicsPerMessage) {
      const chunk = topics.slice(i, i + this.maxTopicsPerMessage);
      const msg: Record<string, unknown> = { [kind]: chunk };
      if (withResume && this.last) msg.resume = { epoch: this.last.epoch, seq: this.last.seq };
      this.send(msg);
    }
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
    switch (frame.type) {
      case 'welcome':
        void this.onWelcome(frame as Welcome);
        return;
      case 'authenticated':
        if (this.welcomed && this._state !== 'open') this.becomeOpen();
        return;
      case 'auth_expiring':
        void this.refreshToken();
        return;
      case 'unsubscribed':
        if (frame.reason === 'revoked') {
          this.emitError({
            kind: 'revoked',
            message: `subscription revoked: ${(frame.channels ?? []).join(', ')}`,
            topics: frame.channels,
          });
        }
        return;
      case 'error':
        this.emitError({
          kind: 'server',
          code: frame.code,
          message: String(frame.message ?? frame.code),
          topics: frame.topics,
        });
        return;
      default:
        // `subscribed` and unknown control frames: nothing to do.
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
    this.send({ auth: token });
    // `open` on the server's `authenticated`.
  }

  /** Returns the token, null for "none" (stop), undefined when getToken threw. */
  private async fetchToken(): Promise<string | null | undefined> {
    if (!this.getToken) return null;
    try {
      const t = await this.getToken();
      return typeof t === 'string' && t !== '' ? t : null;
    } catch (cause) {
      this.emitError({ kind: 'token', message: `getToken failed: ${String(cause)}`, cause });
      return undefined;
    }
  }

  private async refreshToken(): Promise<void> {
    const socket = this.socket;
    const token = await this.fetchToken();
    if (this.socket !== socket || !socket) return;
    if (token === undefined) return; // keep the current token until it expires; 4001 then reconnects
    if (token === null) {
      this.stopForAuth();
      return;
    }
    this.send({ auth: token });
  }

  private stopForAuth(): void {
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
    const topics = [...this.topics.keys()];
    // After a reconnect: resume from the last position seen on the previous connection(s).
    if (topics.length > 0) this.sendTopics('subscribe', topics, this.everOpen);
    this.everOpen = true;
    this.setState('open');
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
    if (seq !== undefined && typeof frame.epoch === 'string') {
      // The resume point: the newest seq seen on this epoch. Frames are not
      // dropped by seq: the server never sends one twice on a connection, and
      // a resume split over several messages replays each part from the same
      // point, so older seqs can legitimately follow newer ones.
      if (!this.last || this.last.epoch !== frame.epoch || seqAfter(seq, this.last.seq)) {
        this.last = { epoch: frame.epoch, seq };
      }
    }
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

/** Creates and connects the module-level client. A second call replaces (and disconnects) the first. */
export function initBroadcast(options: BroadcastClientOptions): BroadcastClient {
  if (singleton) singleton.disconnect();
  singleton = new BroadcastClient(options);
  singleton.connect();
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
