// @vitest-environment node
/** Server rendering: no socket at import time or during render, and a constant server snapshot. */
import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { renderToString } from 'react-dom/server';
import { describe, expect, it } from 'vitest';
import { BroadcastClient } from '../../src/client.js';
import { BroadcastProvider, useBroadcastState, useBroadcastSync } from '../../src/react.js';
import { configureSync, useBroadcastQueryInvalidation, useLiveOrFrozen, type LiveDataSource } from '../../src/tanstack.js';
import { FakeWebSocket } from '../fake-ws.js';

// As the README does it: at module scope, i.e. at import time on the server.
const sync = configureSync({
  electricUrl: 'http://localhost:3000/v1/shape',
  broadcastUrl: 'ws://localhost:8080/ws/broadcast',
  WebSocket: FakeWebSocket,
});
const socketsAtImport = FakeWebSocket.instances.length;

const source: LiveDataSource<string> = { getSnapshot: () => 'order #1', subscribe: () => () => {} };

function Page() {
  const { state } = useBroadcastState();
  useBroadcastSync({ channel: 'order', onInvalidate: () => {} });
  useBroadcastQueryInvalidation({ channel: 'order', queryKey: () => [['orders']] });
  const { data, isStale } = useLiveOrFrozen(source, { channel: 'order', entityId: '1', live: false });
  return <p>{`${state}|${data}|${isStale}`}</p>;
}

describe('server rendering', () => {
  it('configureSync at module scope and a server render create no socket', () => {
    expect(typeof window).toBe('undefined');
    expect(socketsAtImport).toBe(0);
    const html = renderToString(
      <QueryClientProvider client={new QueryClient()}>
        <BroadcastProvider client={sync.broadcast}>
          <Page />
        </BroadcastProvider>
        <BroadcastProvider options={{ url: 'ws://localhost:8080/ws/broadcast', WebSocket: FakeWebSocket }}>
          <Page />
        </BroadcastProvider>
      </QueryClientProvider>,
    );
    expect(html).toContain('closed|order #1|false');
    expect(FakeWebSocket.instances).toHaveLength(0);
    expect(sync.broadcast.state).toBe('closed');
  });

  it('renders the constant server snapshot, not the live state of the client', () => {
    const client = new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket });
    client.connect();
    FakeWebSocket.last.welcome();
    expect(client.state).toBe('open');
    const html = renderToString(
      <QueryClientProvider client={new QueryClient()}>
        <BroadcastProvider client={client}>
          <Page />
        </BroadcastProvider>
      </QueryClientProvider>,
    );
    expect(html).toContain('closed|order #1|false');
    client.disconnect();
  });
});
