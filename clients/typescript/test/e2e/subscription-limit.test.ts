/**
 * End to end against the real binary started with `--max-subscriptions N`:
 * an app asking for N + 5 topics gets N live and 5 `over_limit` (the server
 * never answers `subscription_limit`), and unsubscribing 5 makes the waiting
 * ones live.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { BroadcastClient, type BroadcastError, type ControlFrame, type TopicStatus } from '../../src/client.js';
import { ensureBinary, startDemo, stopDemo, waitFor, type Demo } from './demo.js';

const N = 20;
let server: Demo;

beforeAll(async () => {
  ensureBinary();
  server = await startDemo({ args: ['--max-subscriptions', String(N), '--max-channels-per-message', '7'] });
});
afterAll(async () => {
  if (server) await stopDemo(server);
});

describe('max_subscriptions against the real server', () => {
  it(`N + 5 topics: N live, 5 over_limit; unsubscribing 5 makes the waiting ones live`, async () => {
    const client = new BroadcastClient({ url: server.wsUrl, WebSocket });
    const errors: BroadcastError[] = [];
    const refusals: ControlFrame[] = [];
    client.onError((e) => errors.push(e));
    client.onControl((f) => {
      if (f.type === 'error') refusals.push(f);
    });
    const topics = Array.from({ length: N + 5 }, (_, i) => `order:${i}`);
    const off = topics.map((t) => client.subscribe(t, () => {}));
    client.connect();
    const count = (s: TopicStatus) => topics.filter((t) => client.topicStatus(t) === s).length;
    const detail = () => `; statuses: ${JSON.stringify(topics.map((t) => client.topicStatus(t)))}; errors: ${JSON.stringify(errors)}`;
    try {
      await waitFor(`${N} live`, () => count('live') === N, 20_000, detail);
      expect(topics.slice(0, N).map((t) => client.topicStatus(t))).toEqual(Array(N).fill('live'));
      expect(topics.slice(N).map((t) => client.topicStatus(t))).toEqual(Array(5).fill('over_limit'));
      expect(errors.filter((e) => e.kind === 'limit').map((e) => e.topics)).toEqual([topics.slice(N)]);
      // Nothing over the limit was sent: the server refused nothing, and nothing is retried.
      await new Promise((r) => setTimeout(r, 1_500));
      expect(refusals).toEqual([]);
      expect(count('over_limit')).toBe(5);

      for (const unsubscribe of off.slice(0, 5)) unsubscribe();
      await waitFor('the waiting topics live', () => topics.slice(N).every((t) => client.topicStatus(t) === 'live'), 20_000, detail);
      expect(count('live')).toBe(N);
      expect(refusals).toEqual([]);
    } finally {
      client.disconnect();
    }
  });
});
