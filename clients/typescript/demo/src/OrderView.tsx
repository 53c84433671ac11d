import { useOrder } from './sync/index.js';
import { errorText } from './status.js';

/** One order; with `live: false` the data stays as loaded and a banner says when it changed. */
export function OrderView({ id, live }: { id: number; live: boolean }) {
  const order = useOrder(id, { live });
  if (order.isLoading && !order.data) return <main className="panel"><p className="muted">Loading…</p></main>;
  if (!order.data) {
    return (
      <main className="panel">
        <p className="error">Order #{id}: {order.error ? errorText(order.error) : 'not found'}</p>
      </main>
    );
  }
  const o = order.data;
  return (
    <main className="panel order-view">
      {order.isStale && (
        <div className="stale" data-testid="stale-banner" role="status">
          This order changed since you opened it.
          <button data-testid="refresh" onClick={order.refresh}>
            Refresh
          </button>
        </div>
      )}
      <h2>
        Order #{o.id} · {o.customer ?? '—'}{' '}
        <span className={`status status-${o.status}`} data-testid={`status-${o.id}`}>
          {o.status}
        </span>
      </h2>
      <p className="muted">
        {live ? 'Live: follows every change.' : 'Frozen: shows the order as loaded until you refresh.'}{' '}
        <a href={`/orders/${o.id}${live ? '?live=0' : ''}`}>{live ? 'Freeze' : 'Go live'}</a>
      </p>
      <ul className="items">
        {o.items.map((i) => (
          <li key={i.id}>
            <span className="qty">{i.quantity}×</span> {i.sku}
          </li>
        ))}
        {o.items.length === 0 && <li className="muted">No items.</li>}
      </ul>
    </main>
  );
}
