import type { OrderStatus } from './sync/index.js';

export const STATUSES: OrderStatus[] = ['new', 'preparing', 'ready', 'delivered', 'cancelled'];

export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
