import { useState, type FormEvent } from 'react';
import { orderApi, useOrder, useOrders, type OrderStatus } from './sync/index.js';
import { errorText, STATUSES } from './status.js';

export function Cashier() {
  const orders = useOrders();
  const [selected, setSelected] = useState<number | null>(null);
  // The order just created here, until the list has it.
  const [created, setCreated] = useState<number | null>(null);
  const [customer, setCustomer] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const create = async (e: FormEvent) => {
    e.preventDefault();
    const name = customer.trim();
    if (!name) return;
    setBusy(true);
    setError(null);
    try {
      const { data } = await orderApi.create({ customer: name });
      setCustomer('');
      setCreated(data.id);
      setSelected(data.id);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  // An order no longer in the list (deleted, or another database after a
  // server restart) is not edited any more.
  const inList = selected !== null && orders.data.some((o) => o.id === selected);
  if (created !== null && inList && created === selected) setCreated(null);
  const editing = selected !== null && (inList || created === selected) ? selected : null;

  return (
    <main className="cashier">
      <section className="panel orders-panel">
        <form className="row" onSubmit={create}>
          <input
            data-testid="customer"
            placeholder="Customer name"
            value={customer}
            onChange={(e) => setCustomer(e.target.value)}
            maxLength={200}
          />
          <button data-testid="create-order" type="submit" disabled={busy || !customer.trim()}>
            New order
          </button>
        </form>
        {error && <p className="error">{error}</p>}
        {orders.isLoading && <p className="muted">Loading…</p>}
        {orders.error != null && <p className="error">{errorText(orders.error)}</p>}
        <ul className="order-list">
          {orders.data.map((o) => (
            <li key={o.id}>
              <button
                data-testid={`order-${o.id}`}
                className={o.id === selected ? 'order-pick selected' : 'order-pick'}
                onClick={() => setSelected(o.id)}
              >
                <span>#{o.id} {o.customer ?? '—'}</span>
                <span className={`status status-${o.status}`}>{o.status}</span>
              </button>
            </li>
          ))}
          {!orders.isLoading && orders.data.length === 0 && <li className="muted">No orders yet.</li>}
        </ul>
      </section>
      <section className="panel">
        {editing === null ? <p className="muted">Pick or create an order.</p> : <OrderEditor key={editing} id={editing} />}
      </section>
    </main>
  );
}

/** An item added here: shown at once (pending) until its txid's signal arrived. */
interface LocalItem {
  key: string;
  id?: number;
  sku: string;
  quantity: number;
  pending: boolean;
  failed?: string;
}

let localKeys = 0;

function OrderEditor({ id }: { id: number }) {
  const order = useOrder(id, { live: true });
  const [name, setName] = useState('');
  const [qty, setQty] = useState('1');
  const [local, setLocal] = useState<LocalItem[]>([]);
  const [error, setError] = useState<string | null>(null);

  const addItem = async (e: FormEvent) => {
    e.preventDefault();
    const sku = name.trim();
    const quantity = Number(qty);
    if (!sku || !Number.isInteger(quantity) || quantity < 1) return;
    const key = `local-${++localKeys}`;
    setLocal((l) => [...l, { key, sku, quantity, pending: true }]);
    setName('');
    setQty('1');
    const patch = (p: Partial<LocalItem>) => setLocal((l) => l.map((x) => (x.key === key ? { ...x, ...p } : x)));
    try {
      const { data, txid } = await orderApi.addItem(id, { sku, quantity });
      patch({ id: data.id });
      const seen = txid === null ? true : await order.awaitTxId(txid);
      patch(seen ? { pending: false } : { failed: 'not confirmed yet' });
    } catch (err) {
      patch({ failed: errorText(err) });
    }
  };

  const setStatus = async (status: OrderStatus) => {
    setError(null);
    try {
      await orderApi.setStatus(id, { status });
    } catch (err) {
      setError(errorText(err));
    }
  };

  const serverItems = order.data?.items ?? [];
  const serverIds = new Set(serverItems.map((i) => i.id));
  // A confirmed local item stays until the refetch brings it.
  const localShown = local.filter((l) => l.id === undefined || !serverIds.has(l.id));

  if (order.isLoading) return <p className="muted">Loading order #{id}…</p>;
  if (!order.data) return <p className="error">Order #{id}: {order.error ? errorText(order.error) : 'not found'}</p>;
  return (
    <div className="editor">
      <h2>
        Order #{id} · {order.data.customer ?? '—'}
      </h2>
      <div className="statuses" role="group" aria-label="Status">
        {STATUSES.map((s) => (
          <button key={s} className={s === order.data!.status ? 'status-btn current' : 'status-btn'} onClick={() => setStatus(s)}>
            {s}
          </button>
        ))}
      </div>
      {error && <p className="error">{error}</p>}
      <ul className="items">
        {serverItems.map((i) => (
          <li key={i.id} data-testid="item" data-pending="false">
            <span className="qty">{i.quantity}×</span> {i.sku}
          </li>
        ))}
        {localShown.map((l) => (
          <li key={l.key} data-testid="item" data-pending={String(l.pending)} className={l.pending ? 'pending' : ''}>
            <span className="qty">{l.quantity}×</span> {l.sku}
            {l.pending && !l.failed && <span className="tag">pending</span>}
            {l.failed && <span className="tag error">{l.failed}</span>}
          </li>
        ))}
        {serverItems.length + localShown.length === 0 && <li className="muted">No items.</li>}
      </ul>
      <form className="row" onSubmit={addItem}>
        <input data-testid="item-name" placeholder="Item" value={name} onChange={(e) => setName(e.target.value)} maxLength={200} />
        <input
          data-testid="item-qty"
          type="number"
          min={1}
          className="qty-input"
          value={qty}
          onChange={(e) => setQty(e.target.value)}
        />
        <button data-testid="add-item" type="submit" disabled={!name.trim()}>
          Add
        </button>
      </form>
    </div>
  );
}
