// @vitest-environment jsdom
/**
 * Real React (react-dom via @testing-library/react, jsdom) against the real
 * `pgbroadcast demo`: 200 `useBroadcastSync` entity hooks (`order:<id>`)
 * mounting at once under React.StrictMode (every effect runs, is cleaned up
 * and runs again; the provider connects, disconnects and connects again).
 * Every topic goes live, and after 200 orders are created through the REST
 * API each hook's callback gets its own entity's `created` signal, once.
 *
 * A `.ts` file (the e2e project's pattern), so no JSX: createElement. Node 20
 * has no global WebSocket: the client gets the `ws` package's.
 */
import { act, cleanup, render } from '@testing-library/react';
import { StrictMode, createElement, type ReactNode } from 'react';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { BroadcastClient, BroadcastSignal, ControlFrame } from '../../src/client.js';
import { BroadcastProvider, useBroadcastClient, useBroadcastSync } from '../../src/react.js';
import { api, ensureBinary, startDemo, stopDemo, waitFor, type Demo } from './demo.js';

interface Order {
  id: number;
  customer: string;
  [k: string]: unknown;
}

const COUNT = 200;
const received = new Map<number, Array<{ entityId: string | undefined; signal: BroadcastSignal }>>();
let renders = 0;

function OrderWatcher({ id }: { id: number }): ReactNode {
  renders++;
  useBroadcastSync({
    channel: 'order',
    entityId: id,
    onInvalidate: (entityId, signal) => received.get(id)!.push({ entityId, signal }),
  });
  return null;
}

let captured: BroadcastClient | null = null;
function Capture(): ReactNode {
  captured = useBroadcastClient();
  return null;
}

describe('200 useBroadcastSync entity hooks under React.StrictMode against the real pgbroadcast demo', () => {
  let demo: Demo | null = null;

  beforeAll(async () => {
    ensureBinary();
    demo = await startDemo();
  }, 1_500_000);

  afterAll(async () => {
    cleanup();
    if (demo) await stopDemo(demo);
  }, 60_000);

  it('every topic goes live and each hook gets its own entity signal', async () => {
    expect(typeof window).toBe('object'); // jsdom, per the comment on the first line
    const { data: newest } = await api<{ data: Order[] }>(demo!, 'GET', '/api/orders?limit=1');
    const base = newest[0]?.id ?? 0;
    // The demo's ids come from a sequence: the next 200 orders get the next 200 ids.
    const ids = Array.from({ length: COUNT }, (_, i) => base + 1 + i);
    for (const id of ids) received.set(id, []);

    const tree = createElement(
      StrictMode,
      null,
      createElement(
        BroadcastProvider,
        { options: { url: demo!.wsUrl, WebSocket, backoff: { baseMs: 100, maxMs: 1000 } } },
        createElement(Capture),
        ...ids.map((id) => createElement(OrderWatcher, { key: id, id })),
      ),
    );
    await act(async () => {
      render(tree);
    });
    expect(renders).toBeGreaterThanOrEqual(COUNT * 2); // StrictMode renders twice
    const client = captured!;
    expect(client).not.toBeNull();
    const errors: ControlFrame[] = [];
    client.onControl((f) => {
      if (f.type === 'error') errors.push(f);
    });

    await waitFor(
      'every topic live',
      () => ids.every((id) => client.topicStatus(`order:${id}`) === 'live'),
      30_000,
      () =>
        `; state ${client.state}, not live: ${ids.filter((id) => client.topicStatus(`order:${id}`) !== 'live').length}, errors: ${JSON.stringify(errors)}`,
    );
    expect(client.state).toBe('open');
    expect(errors).toEqual([]);

    const createdIds: number[] = [];
    for (let i = 0; i < COUNT; i += 20) {
      const batch = await Promise.all(
        ids.slice(i, i + 20).map((_, j) => api<{ data: Order }>(demo!, 'POST', '/api/orders', { customer: `strict-${i + j}` })),
      );
      createdIds.push(...batch.map((r) => r.data.id));
    }
    expect([...createdIds].sort((a, b) => a - b)).toEqual(ids);

    await waitFor(
      "every hook's created signal",
      () => ids.every((id) => received.get(id)!.some((r) => r.signal.event === 'created')),
      30_000,
      () => `; missing: ${ids.filter((id) => !received.get(id)!.some((r) => r.signal.event === 'created')).slice(0, 10)}`,
    );
    for (const id of ids) {
      const got = received.get(id)!;
      // Its own entity only, exactly one `created` (StrictMode's first effect left no handler behind).
      expect(
        got.every((r) => r.entityId === String(id) && r.signal.entityId === String(id) && !r.signal.resync),
        `order ${id}: ${JSON.stringify(got)}`,
      ).toBe(true);
      expect(got.filter((r) => r.signal.event === 'created'), `order ${id}`).toHaveLength(1);
    }
    expect(errors).toEqual([]);

    // Unmounting drops every subscription and closes the provider's client.
    cleanup();
    expect(client.topicStatus(`order:${ids[0]}`)).toBeUndefined();
    expect(client.state).toBe('closed');
  });
});
