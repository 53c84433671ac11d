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
  sent: any[] = [];
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
    this.sent.push(JSON.parse(data));
  }
  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }

  // --- driven by the test
  serverOpen(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  serverSend(frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  serverClose(code = 1006, reason = ''): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  welcome(opts: { auth?: 'required' | 'none'; epoch?: string; seq?: number | string; heartbeat_ms?: number } = {}): void {
    if (this.readyState !== 1) this.serverOpen();
    this.serverSend({
      type: 'welcome',
      protocol: 1,
      auth: opts.auth ?? 'none',
      epoch: opts.epoch ?? 'e1',
      seq: opts.seq ?? 0,
      limits: { heartbeat_ms: opts.heartbeat_ms ?? 30000, max_channels_per_message: 100 },
    });
  }
  signal(channel: string, event: string, payload: Record<string, unknown>, seq?: number | string, epoch = 'e1'): void {
    this.serverSend(seq === undefined ? { channel, event, payload } : { channel, event, payload, seq, epoch });
  }
}
