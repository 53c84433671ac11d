import { BroadcastClient } from '../src/client.js';

/**
 * The client sends subscription changes at the end of the tick. Reading
 * `sent`, and every event from the "server", first has every client send
 * what it has pending (`BroadcastClient.flushAll()`), so a synchronous test
 * sees what the tick will have put on the wire; each change goes out once,
 * early or at the end of the tick.
 */
const runQueuedFlushes = (): void => BroadcastClient.flushAll();

/** A scriptable fake WebSocket for unit and hook tests. */
export class FakeWebSocket {
  static instances: FakeWebSocket[] = [];
  static reset(): void {
    FakeWebSocket.instances = [];
  }
  static get last(): FakeWebSocket {
    const s = FakeWebSocket.instances.at(-1);
    if (!s) throw new Error('no FakeWebSocket created');
    return s;
  }

  readyState = 0;
  /** Every message sent, parsed. */
  readonly sentRaw: any[] = [];
  get sent(): any[] {
    runQueuedFlushes();
    return this.sentRaw;
  }
  closedWith: { code?: number; reason?: string } | null = null;
  onopen: ((ev: any) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason?: string }) => void) | null = null;
  onerror: ((ev: any) => void) | null = null;

  constructor(public url: string) {
    FakeWebSocket.instances.push(this);
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('not open');
    this.sentRaw.push(JSON.parse(data));
  }
  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }

  // --- driven by the test. An event from the network starts a new task: the
  // client's end-of-tick flushes have run by then.
  serverOpen(): void {
    runQueuedFlushes();
    this.readyState = 1;
    this.onopen?.({});
  }
  serverSend(frame: unknown): void {
    runQueuedFlushes();
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  serverClose(code = 1006, reason = ''): void {
    runQueuedFlushes();
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  welcome(
    opts: {
      auth?: 'required' | 'none';
      epoch?: string;
      seq?: number | string;
      heartbeat_ms?: number;
      max_channels_per_message?: number;
      max_messages_per_second?: number;
      /** Sent only when given (the client then assumes the server's default, 1000). */
      max_subscriptions?: number;
    } = {},
  ): void {
    if (this.readyState !== 1) this.serverOpen();
    this.serverSend({
      type: 'welcome',
      protocol: 1,
      auth: opts.auth ?? 'none',
      epoch: opts.epoch ?? 'e1',
      seq: opts.seq ?? 0,
      limits: {
        heartbeat_ms: opts.heartbeat_ms ?? 30000,
        max_channels_per_message: opts.max_channels_per_message ?? 100,
        max_messages_per_second: opts.max_messages_per_second ?? 50,
        ...(opts.max_subscriptions !== undefined ? { max_subscriptions: opts.max_subscriptions } : {}),
      },
    });
  }
  signal(channel: string, event: string, payload: Record<string, unknown>, seq?: number | string, epoch = 'e1'): void {
    this.serverSend(seq === undefined ? { channel, event, payload } : { channel, event, payload, seq, epoch });
  }
}
