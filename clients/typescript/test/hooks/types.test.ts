/** Compile-time checks that the real TanStack DB types fit this package's shapes (tsc runs on tests too). */
import { createCollection, type Collection } from '@tanstack/db';
import { electricCollectionOptions, type ElectricCollectionUtils } from '@tanstack/electric-db-collection';
import { queryCollectionOptions } from '@tanstack/query-db-collection';
import { QueryClient } from '@tanstack/query-core';
import { describe, expect, expectTypeOf, it } from 'vitest';
import type { CollectionLike, RefetchableCollection } from '../../src/tanstack.js';

type Order = { id: number; customer: string; status: string };

describe('types', () => {
  it('an electric collection is a CollectionLike with utils.awaitTxId', () => {
    const asLike = (c: Collection<Order, number, ElectricCollectionUtils<Order>>): CollectionLike<Order, number> => c;
    expectTypeOf(asLike).returns.toEqualTypeOf<CollectionLike<Order, number>>();
    const make = () =>
      createCollection(
        electricCollectionOptions({
          id: 'orders',
          shapeOptions: { url: 'http://localhost:3000/v1/shape', params: { table: 'orders' } },
          getKey: (o: Order) => o.id,
        }),
      );
    const fits = (c: ReturnType<typeof make>): CollectionLike<Order> => c;
    expect(typeof fits).toBe('function');
    expect(typeof make).toBe('function');
  });

  it('a query collection is a RefetchableCollection', () => {
    const make = () =>
      createCollection(
        queryCollectionOptions({
          queryKey: ['orders'],
          queryFn: async (): Promise<Order[]> => [],
          queryClient: new QueryClient(),
          getKey: (o: Order) => o.id,
        }),
      );
    const fits = (c: ReturnType<typeof make>): RefetchableCollection => c;
    expect(typeof fits).toBe('function');
    expect(typeof make).toBe('function');
  });
});
