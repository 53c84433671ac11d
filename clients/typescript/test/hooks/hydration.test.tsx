/** Hydration: the browser's client may already be open; the markup must still match the server's. */
import { act } from '@testing-library/react';
import { hydrateRoot } from 'react-dom/client';
import { renderToString } from 'react-dom/server';
import { describe, expect, it, vi } from 'vitest';
import { BroadcastClient } from '../../src/client.js';
import { BroadcastProvider, useBroadcastState } from '../../src/react.js';
import { FakeWebSocket } from '../fake-ws.js';

function Status() {
  const { state } = useBroadcastState();
  return <span>{state}</span>;
}

describe('hydration', () => {
  it('hydrates without a mismatch while the client is open, then shows the real state', async () => {
    FakeWebSocket.reset();
    const serverClient = new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket });
    const container = document.createElement('div');
    container.innerHTML = renderToString(
      <BroadcastProvider client={serverClient}>
        <Status />
      </BroadcastProvider>,
    );
    expect(container.textContent).toBe('closed');

    const client = new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket });
    client.connect();
    FakeWebSocket.last.welcome();
    const onRecoverableError = vi.fn();
    let root!: ReturnType<typeof hydrateRoot>;
    await act(async () => {
      root = hydrateRoot(
        container,
        <BroadcastProvider client={client}>
          <Status />
        </BroadcastProvider>,
        { onRecoverableError },
      );
    });
    expect(onRecoverableError).not.toHaveBeenCalled();
    expect(container.textContent).toBe('open');
    act(() => root.unmount());
    client.disconnect();
  });
});
