import { useOrder, useOrders, type Order } from './sync/index.js';
import { errorText } from './status.js';

export function Kitchen() {
  const orders = useOrders();
  return (
    <main className="kitchen">
      {orders.isLoading && <p className="muted">Loading…</p>}
      {orders.error != null && <p className="error">{errorText(orders.error)}</p>}
      {!orders.isLoading && orders.data.length === 0 && <p className="muted">No orders yet.</p>}
      <div className="tickets">
        {orders.data.map((o) => (
          <KitchenOrder key={o.id} order={o} />
        ))}
      </div>
    </main>
  );
}

function KitchenOrder({ order }: { order: Order }) {
  const detail = useOrder(order.id, { live: true });
  const status = detail.data?.status ?? order.status;
  return (
    <article className={`ticket ticket-${status}`} data-testid={`kitchen-order-${order.id}`}>
      <header>
        <strong>#{order.id}</strong> <span>{order.customer ?? '—'}</span>
        <span className={`status status-${status}`} data-testid={`status-${order.id}`}>
          {status}
        </span>
      </header>
      <ul className="items">
        {(detail.data?.items ?? []).map((i) => (
          <li key={i.id}>
            <span className="qty">{i.quantity}×</span> {i.sku}
          </li>
        ))}
        {detail.data && detail.data.items.length === 0 && <li className="muted">No items yet.</li>}
        {detail.isLoading && <li className="muted">Loading…</li>}
      </ul>
    </article>
  );
}
