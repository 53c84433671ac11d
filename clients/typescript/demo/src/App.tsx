import { Cashier } from './Cashier.js';
import { Kitchen } from './Kitchen.js';
import { OrderView } from './OrderView.js';
import { ConnectionBadge } from './connection.js';

function Header({ title }: { title: string }) {
  return (
    <header className="top">
      <a href="/" className="home">pgbroadcast</a>
      <h1>{title}</h1>
      <nav>
        <a href="/cashier">Cashier</a>
        <a href="/kitchen">Kitchen</a>
      </nav>
      <ConnectionBadge />
    </header>
  );
}

function Index() {
  return (
    <main className="index">
      <p>Orders, live from Postgres row triggers over a WebSocket. Open two of these side by side:</p>
      <ul>
        <li>
          <a href="/cashier">Cashier</a>: create orders, add items, change their status.
        </li>
        <li>
          <a href="/kitchen">Kitchen</a>: every order with its items, updating live.
        </li>
        <li>
          <code>/orders/&lt;id&gt;?live=0</code>: one order frozen as it was loaded; a banner says when it changed.
        </li>
      </ul>
    </main>
  );
}

export function App() {
  const path = location.pathname.replace(/\/+$/, '') || '/';
  const order = /^\/orders\/(\d+)$/.exec(path);
  if (path === '/cashier') {
    return (
      <>
        <Header title="Cashier" />
        <Cashier />
      </>
    );
  }
  if (path === '/kitchen') {
    return (
      <>
        <Header title="Kitchen" />
        <Kitchen />
      </>
    );
  }
  if (order) {
    const live = new URLSearchParams(location.search).get('live') !== '0';
    return (
      <>
        <Header title={`Order #${order[1]}`} />
        <OrderView id={Number(order[1])} live={live} />
      </>
    );
  }
  return (
    <>
      <Header title="Orders" />
      {path === '/' ? <Index /> : <main className="index"><p>Nothing here. <a href="/">Start over</a>.</p></main>}
    </>
  );
}
