import { act, cleanup, renderHook } from '@testing-library/react';
import { StrictMode, type ReactNode } from 'react';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BroadcastClient } from '../../src/client.js';
import { BroadcastProvider, useBroadcastSync, useTopicStatus } from '../../src/react.js';
import { FakeWebSocket } from '../fake-ws.js';

beforeEach(() => FakeWebSocket.reset());
afterEach(() => cleanup());

describe('useTopicStatus', () => {
  it('renders a topic going from pending to live, and a refusal', () => {
    const client = new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket });
    client.connect();
    FakeWebSocket.last.welcome();
    const wrapper = ({ children }: { children: ReactNode }) => (
      <StrictMode>
        <BroadcastProvider client={client}>{children}</BroadcastProvider>
      </StrictMode>
    );
    const { result } = renderHook(
      () => {
        useBroadcastSync({ channel: 'order', entityId: 7, onInvalidate: () => {} });
        useBroadcastSync({ channel: 'secret', onInvalidate: () => {} });
        return { order: useTopicStatus('order', 7), secret: useTopicStatus('secret'), none: useTopicStatus('other') };
      },
      { wrapper },
    );
    // StrictMode's mount/unmount/mount went out as one subscribe.
    expect(FakeWebSocket.last.sent).toEqual([{ subscribe: ['order:7', 'secret'] }]);
    expect(result.current).toEqual({ order: 'pending', secret: 'pending', none: undefined });
    act(() => {
      FakeWebSocket.last.serverSend({ type: 'error', code: 'forbidden', message: 'not allowed for this token', topics: ['secret'] });
      FakeWebSocket.last.serverSend({ type: 'subscribed', channels: ['order:7'] });
    });
    expect(result.current).toEqual({ order: 'live', secret: 'forbidden', none: undefined });
    client.disconnect();
  });
});
