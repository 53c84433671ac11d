/**
 * The real TanStack DB collections fit this package's shapes.
 *
 * The `expectTypeOf` and `@ts-expect-error` lines are checked by the
 * compiler, not at run time: `npm run typecheck` (`tsc --noEmit`, which
 * includes the tests and runs first in `npm test`) fails when a real
 * collection stops fitting, when a use site stops inferring its row type
 * from it, or when the shapes become so loose that a wrong argument is
 * accepted (an unused `@ts-expect-error` is an error). The last test checks
 * the same fit at run time: a real query collection refetched by a signal.
 */
import { createCollection } from '@tanstack/db';
import { electricCollectionOptions } from '@tanstack/electric-db-collection';
import { queryCollectionOptions } from '@tanstack/query-db-collection';
import { QueryClient } from '@tanstack/query-core';
import { beforeEach, describe, expect, expectTypeOf, it, vi } from 'vitest';
import { BroadcastClient } from '../../src/client.js';
import {
  bindQueryCollection,
  collectionSource,
  type CollectionLike,
  type LiveDataSource,
  type RefetchableCollection,
} from '../../src/tanstack.js';
import { FakeWebSocket } from '../fake-ws.js';

type Order = { id: number; customer: string; status: string };

const electricOrders = () =>
  createCollection(
    electricCollectionOptions({
      id: 'orders',
      shapeOptions: { url: 'http://localhost:3000/v1/shape', params: { table: 'orders' } },
      getKey: (o: Order) => o.id,
    }),
  );
type ElectricOrders = ReturnType<typeof electricOrders>;

const queryOrders = (queryClient: QueryClient, queryFn: () => Promise<Order[]>) =>
  createCollection(
    queryCollectionOptions({
      id: `orders-${Math.random()}`,
      queryKey: ['orders'],
      queryFn,
      queryClient,
      getKey: (o: Order) => o.id,
      startSync: true,
    }),
  );
type QueryOrders = ReturnType<typeof queryOrders>;
/** The Order fields of a collection's rows (without TanStack DB's virtual `$` props). */
const plain = (rows: Order[]): Order[] => rows.map(({ id, customer, status }) => ({ id, customer, status }));

beforeEach(() => FakeWebSocket.reset());

describe('types', () => {
  it('an electric collection is a CollectionLike of its rows and keys, with utils.awaitTxId', () => {
    expectTypeOf<ElectricOrders>().toExtend<CollectionLike<Order, number>>();
    // Its rows are Orders, not anything at all.
    expectTypeOf<ElectricOrders>().not.toExtend<CollectionLike<{ sku: string }, number>>();
    // Use sites infer the row type from the real collection (its rows carry
    // TanStack DB's virtual props beside the Order's fields).
    const one = (c: ElectricOrders) => collectionSource(c, 1);
    const all = (c: ElectricOrders) => collectionSource(c);
    expectTypeOf(one).returns.toExtend<LiveDataSource<Order | undefined>>();
    expectTypeOf(all).returns.toExtend<LiveDataSource<Order[]>>();
    expectTypeOf(one).returns.not.toExtend<LiveDataSource<{ sku: string } | undefined>>();
    expectTypeOf(all).returns.not.toExtend<LiveDataSource<{ sku: string }[]>>();
  });

  it("a collection's key type is checked: a number-keyed collection takes no string key", () => {
    const numberKeyed = {} as CollectionLike<Order, number>;
    // @ts-expect-error a string key for a number-keyed collection
    const wrong = () => collectionSource(numberKeyed, 'one');
    const right = () => collectionSource(numberKeyed, 1);
    void wrong;
    expectTypeOf(right).returns.toExtend<LiveDataSource<Order | undefined>>();
    // So with the real query collection (getKey returns the Order's number id).
    // @ts-expect-error a string key for the query collection's number keys
    const wrongReal = (c: QueryOrders) => collectionSource(c, 'one');
    void wrongReal;
  });

  it('a query collection is a RefetchableCollection and a CollectionLike; an object without utils.refetch is not', () => {
    expectTypeOf<QueryOrders>().toExtend<RefetchableCollection>();
    expectTypeOf<QueryOrders>().toExtend<CollectionLike<Order, number>>();
    expectTypeOf<{ utils: { awaitTxId: () => Promise<boolean> } }>().not.toExtend<RefetchableCollection>();
    const client = new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket });
    // @ts-expect-error no utils.refetch
    const bindWithout = () => bindQueryCollection(client, { utils: {} }, { channel: 'order' });
    void bindWithout;
  });

  it('bindQueryCollection refetches a real query collection on a signal: it then holds the new rows', async () => {
    let rows: Order[] = [{ id: 1, customer: 'ada', status: 'new' }];
    const queryFn = vi.fn(async () => rows);
    const orders = queryOrders(new QueryClient(), queryFn);
    await orders.toArrayWhenReady();
    expect(plain(orders.toArray)).toEqual(rows);
    expect(queryFn).toHaveBeenCalledTimes(1);

    const client = new BroadcastClient({ url: 'ws://test/ws/broadcast', WebSocket: FakeWebSocket });
    client.connect();
    FakeWebSocket.last.welcome();
    const off = bindQueryCollection(client, orders, { channel: 'order' });
    expect(FakeWebSocket.last.sent).toContainEqual({ subscribe: ['order'] });
    FakeWebSocket.last.serverSend({ type: 'subscribed', channels: ['order'] });
    // Going live refetches once (writes between the load and the subscription).
    await vi.waitFor(() => expect(queryFn).toHaveBeenCalledTimes(2));

    rows = [...rows, { id: 2, customer: 'bob', status: 'new' }];
    FakeWebSocket.last.signal('order', 'created', { entity_id: '2', txid: 7 }, 1);
    await vi.waitFor(() => expect(plain(orders.toArray)).toEqual(rows));
    expect(queryFn).toHaveBeenCalledTimes(3);
    off();
    client.disconnect();
    await orders.cleanup();
  });
});
