/**
 * The demo's browser app against a real `pgbroadcast demo` (its own private
 * Postgres), in Chromium driven by playwright-core: /usr/bin/chromium (or
 * $CHROMIUM_PATH); no browser is ever downloaded. A cashier page and a
 * kitchen page share one browser. Screenshots go to test-artifacts/ (git-ignored).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page, type Request } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, ensureBinary, startDemo, stopDemo, type Demo } from '../e2e/demo.js';

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const ARTIFACTS = resolve(pkgDir, 'test-artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

interface Order {
  id: number;
  customer: string | null;
  status: string;
}
interface Mutation<T> {
  data: T;
  txid: number | null;
}

let demo: Demo;
let browser: Browser;
let context: BrowserContext;
let cashier: Page;
let kitchen: Page;
const pageErrors: string[] = [];
const consoleLines: string[] = [];

function psql(sql: string): string {
  const pgBin = process.env.PGBROADCAST_PG_BIN;
  const bin = ['/usr/bin/psql', '/usr/lib/postgresql/15/bin/psql', pgBin ? `${pgBin}/psql` : ''].find((p) => p && existsSync(p)) ?? 'psql';
  const r = spawnSync(bin, [demo.pgUrl, '-Atc', sql], { encoding: 'utf8', timeout: 15_000 });
  if (r.status !== 0) throw new Error(`psql: ${r.stderr}`);
  return r.stdout.trim();
}

async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = resolve(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
}

/** Per page: a counter of the events below, in the order Chromium reported them. */
const events = new WeakMap<Page, { n: number; subscribed: Map<string, number> }>();

function eventsOf(page: Page): { n: number; subscribed: Map<string, number> } {
  let e = events.get(page);
  if (!e) events.set(page, (e = { n: 0, subscribed: new Map() }));
  return e;
}

async function openPage(path: string): Promise<Page> {
  const page = await context.newPage();
  // When the server confirmed each topic (`subscribed`), as a point in the page's event order.
  page.on('websocket', (ws) =>
    ws.on('framereceived', (f) => {
      const e = eventsOf(page);
      e.n += 1;
      try {
        const m = JSON.parse(String(f.payload)) as { type?: string; channels?: string[] };
        if (m.type === 'subscribed') for (const c of m.channels ?? []) e.subscribed.set(c, e.n);
      } catch {
        // not JSON
      }
    }),
  );
  page.on('pageerror', (e) => pageErrors.push(`${path}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') consoleLines.push(`${path}: ${m.type()}: ${m.text()}`);
  });
  await page.goto(`${demo.httpUrl}${path}`);
  await connection(page, 'open');
  return page;
}

const byTestId = (id: string) => `[data-testid="${id}"]`;

let watches = 0;

/**
 * Starts watching the page's DOM (a MutationObserver, so even a state that
 * lasts one render is seen) for `predicate(arg)` to hold; resolves once the
 * observer is in place, to a function that waits for it.
 */
async function watch<A>(page: Page, predicate: (arg: A) => unknown, arg: A, timeout = 20_000): Promise<() => Promise<void>> {
  const key = `__watch${++watches}`;
  await page.evaluate(
    ({ key, src, arg, timeout }) => {
      const holds = (0, eval)(`(${src})`) as (a: unknown) => unknown;
      (window as unknown as Record<string, unknown>)[key] = new Promise<void>((ok, fail) => {
        if (holds(arg)) return ok();
        const observer = new MutationObserver(() => {
          if (!holds(arg)) return;
          observer.disconnect();
          clearTimeout(timer);
          ok();
        });
        observer.observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
        const timer = setTimeout(() => {
          observer.disconnect();
          fail(new Error(`timed out after ${timeout} ms waiting for ${src}(${JSON.stringify(arg)})`));
        }, timeout);
      });
    },
    { key, src: predicate.toString(), arg: arg as unknown, timeout },
  );
  return async () => {
    await page.evaluate((key) => (window as unknown as Record<string, Promise<void>>)[key], key);
  };
}

async function until<A>(page: Page, predicate: (arg: A) => unknown, arg: A, timeout = 20_000): Promise<void> {
  await (await watch(page, predicate, arg, timeout))();
}

const badgeIs = (s: string) => document.querySelector('[data-testid="connection"]')?.textContent === s;

/** Waits until the badge says `state`. */
async function connection(page: Page, state: string, timeout = 30_000): Promise<void> {
  await until(page, badgeIs, state, timeout);
}

/** Waits until the element's text is `text`. */
async function textIs(page: Page, testId: string, text: string, timeout = 20_000): Promise<void> {
  await until(page, ([id, t]) => document.querySelector(`[data-testid="${id}"]`)?.textContent === t, [testId, text], timeout);
}

/** Waits until the element's text contains `text`. */
async function textHas(page: Page, testId: string, text: string, timeout = 20_000): Promise<void> {
  await until(page, ([id, t]) => (document.querySelector(`[data-testid="${id}"]`)?.textContent ?? '').includes(t), [testId, text], timeout);
}

/** Creates an order at the cashier (which selects it); its id. */
async function createAtCashier(customer: string): Promise<number> {
  await cashier.fill(byTestId('customer'), customer);
  const created = cashier.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/api/orders');
  await cashier.click(byTestId('create-order'));
  const body = (await (await created).json()) as Mutation<Order>;
  await cashier.waitForSelector(byTestId(`order-${body.data.id}`));
  return body.data.id;
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (install Debian's chromium, or set CHROMIUM_PATH)`);
  ensureBinary();
  demo = await startDemo();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  cashier = await openPage('/cashier');
  kitchen = await openPage('/kitchen');
});

afterAll(async () => {
  await browser?.close();
  if (demo) await stopDemo(demo);
  if (pageErrors.length > 0) console.log(`page errors:\n${pageErrors.join('\n')}`);
  if (consoleLines.length > 0) console.log(`page console:\n${consoleLines.join('\n')}`);
});

describe('demo page', () => {
  it('serves the page, the script and the style sheet with their content types', async () => {
    for (const [path, type] of [
      ['/', 'text/html'],
      ['/cashier', 'text/html'],
      ['/kitchen', 'text/html'],
      ['/orders/1', 'text/html'],
      ['/app.js', 'text/javascript'],
      ['/app.css', 'text/css'],
    ] as const) {
      const res = await fetch(`${demo.httpUrl}${path}`);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-type'), path).toContain(type);
      expect(res.headers.get('cache-control'), path).toBeTruthy();
    }
  });

  it('(a) an item added at the cashier shows pending, then confirmed, and appears in the kitchen', async () => {
    const id = await createAtCashier('alice-a');
    await kitchen.waitForSelector(byTestId(`kitchen-order-${id}`));
    // Watch for both before clicking: the pending state may be short.
    const itemIs = ([name, pending]: [string, string]) =>
      [...document.querySelectorAll('[data-testid="item"]')].some((e) => e.getAttribute('data-pending') === pending && e.textContent?.includes(name));
    const sawPending = await watch(cashier, itemIs, ['Falafel wrap', 'true']);
    const inKitchen = await watch(kitchen, ([id, t]) => (document.querySelector(`[data-testid="${id}"]`)?.textContent ?? '').includes(t), [
      `kitchen-order-${id}`,
      'Falafel wrap',
    ]);
    await cashier.fill(byTestId('item-name'), 'Falafel wrap');
    await cashier.fill(byTestId('item-qty'), '2');
    // From the write leaving the cashier (not from the click: Playwright's
    // click waits for the element to be actionable first).
    let posted = 0;
    const onPost = (r: Request) => {
      if (r.method() === 'POST' && new URL(r.url()).pathname === `/api/orders/${id}/items`) posted = performance.now();
    };
    cashier.on('request', onPost);
    await cashier.bringToFront();
    await cashier.click(byTestId('add-item'));
    await inKitchen();
    console.log(`(a) POST of the item at the cashier → item shown in the kitchen: ${(performance.now() - posted).toFixed(0)} ms`);
    cashier.off('request', onPost);
    await sawPending();
    await until(cashier, itemIs, ['Falafel wrap', 'false']);
    expect(await kitchen.textContent(byTestId(`kitchen-order-${id}`))).toContain('2×');
    await screenshot(cashier, 'cashier');
    await screenshot(kitchen, 'kitchen');
  });

  it('(e) one PATCH refetches the affected order exactly once on the kitchen page', async () => {
    const inFlight = new Set<Request>();
    let reads: { path: string; at: number }[] = [];
    const isOrderRead = (r: Request) => r.method() === 'GET' && new URL(r.url()).pathname.startsWith('/api/orders');
    const onRequest = (r: Request) => {
      if (!isOrderRead(r)) return;
      const e = eventsOf(kitchen);
      e.n += 1;
      inFlight.add(r);
      reads.push({ path: new URL(r.url()).pathname, at: e.n });
    };
    const onDone = (r: Request) => inFlight.delete(r);
    kitchen.on('request', onRequest);
    kitchen.on('requestfinished', onDone);
    kitchen.on('requestfailed', onDone);
    try {
      const x = await createAtCashier('xavier-e');
      const y = await createAtCashier('yvonne-e');
      const z = await createAtCashier('zoe-e');
      for (const id of [x, y, z]) await textIs(kitchen, `status-${id}`, 'new');
      // Settled: each order's topic confirmed by the server and read after
      // that (a subscription going live refetches), and no read in flight.
      const settled = () =>
        inFlight.size === 0 &&
        [x, y, z].every((id) => {
          const live = eventsOf(kitchen).subscribed.get(`order:${id}`);
          return live !== undefined && reads.some((r) => r.path === `/api/orders/${id}` && r.at > live);
        });
      await expect.poll(settled, { timeout: 10_000 }).toBe(true);
      reads = [];
      await api<Mutation<Order>>(demo, 'PATCH', `/api/orders/${x}`, { status: 'preparing' });
      await textIs(kitchen, `status-${x}`, 'preparing');
      // A later signal (another order's) has had its effect: anything X's
      // signals caused started before it.
      await api<Mutation<Order>>(demo, 'PATCH', `/api/orders/${y}`, { status: 'ready' });
      await textIs(kitchen, `status-${y}`, 'ready');
      await expect.poll(() => inFlight.size, { timeout: 10_000 }).toBe(0);
      const paths = reads.map((r) => r.path);
      const count = (path: string) => paths.filter((p) => p === path).length;
      console.log(`(e) order reads after PATCH ${x} then PATCH ${y}: ${JSON.stringify(paths)}`);
      expect(count(`/api/orders/${x}`), `GET /api/orders/${x} (the PATCHed order)`).toBe(1);
      expect(count(`/api/orders/${y}`), `GET /api/orders/${y} (the second PATCH)`).toBe(1);
      expect(count(`/api/orders/${z}`), `GET /api/orders/${z} (untouched)`).toBe(0);
      // The list: once per PATCH at most.
      expect(count('/api/orders')).toBeGreaterThanOrEqual(1);
      expect(count('/api/orders')).toBeLessThanOrEqual(2);
    } finally {
      kitchen.off('request', onRequest);
      kitchen.off('requestfinished', onDone);
      kitchen.off('requestfailed', onDone);
    }
  });

  it('(d) the live:false view shows a stale banner after a PATCH; Refresh shows the new status', async () => {
    const { data: order } = await api<Mutation<Order>>(demo, 'POST', '/api/orders', { customer: 'dora-d' });
    const view = await openPage(`/orders/${order.id}?live=0`);
    try {
      await textIs(view, `status-${order.id}`, 'new');
      expect(await view.$(byTestId('stale-banner'))).toBeNull();
      await api<Mutation<Order>>(demo, 'PATCH', `/api/orders/${order.id}`, { status: 'delivered' });
      await view.waitForSelector(byTestId('stale-banner'));
      // Frozen: still what it was loaded with.
      expect(await view.textContent(byTestId(`status-${order.id}`))).toBe('new');
      await screenshot(view, 'order-frozen-stale');
      await view.click(byTestId('refresh'));
      await textIs(view, `status-${order.id}`, 'delivered');
      await view.waitForSelector(byTestId('stale-banner'), { state: 'detached' });
    } finally {
      await view.close();
    }
  });

  it('(b) the LISTEN connection killed: the kitchen shows resyncing, then a write made meanwhile', async () => {
    await connection(kitchen, 'open');
    const id = await createAtCashier('bob-b');
    await kitchen.waitForSelector(byTestId(`kitchen-order-${id}`));
    const sawResyncing = await watch(kitchen, badgeIs, 'resyncing', 30_000);
    const killed = psql(
      "select count(pg_terminate_backend(pid)) from pg_stat_activity where application_name = 'pgbroadcast-listener' or query ilike 'LISTEN%'",
    );
    expect(Number(killed)).toBeGreaterThanOrEqual(1);
    // While the listener reconnects: this write's own signal may be lost; the resync covers it.
    await api<Mutation<unknown>>(demo, 'POST', `/api/orders/${id}/items`, { sku: 'Resync soup', quantity: 1 });
    await sawResyncing();
    await connection(kitchen, 'open');
    await textHas(kitchen, `kitchen-order-${id}`, 'Resync soup');
  });

  it('(c) the server restarted on the same port: both pages reconnect by themselves and show the new server', async () => {
    const { port } = demo;
    const before = await api<{ data: Order[] }>(demo, 'GET', '/api/orders');
    expect(before.data.map((o) => o.customer)).toContain('alice-a');
    await stopDemo(demo);
    await until(kitchen, (s) => document.querySelector('[data-testid="connection"]')?.textContent !== s, 'open', 15_000);
    demo = await startDemo({ port });
    await connection(kitchen, 'open');
    await connection(cashier, 'open');
    // A new private database, with none of the old orders: the pages show it.
    await until(kitchen, (old) => !document.body.textContent?.includes(old), 'alice-a');
    await until(cashier, (old) => !document.body.textContent?.includes(old), 'alice-a');
    await kitchen.waitForSelector('text=No orders yet.');
    await screenshot(kitchen, 'kitchen-after-restart');
  });

  it('(c2) after the restart, a write on the new server shows on both pages', async () => {
    // A fresh cluster starts its xids where the old one did: this order's
    // txid was most likely seen before the restart, in another epoch.
    const { data: fresh } = await api<Mutation<Order>>(demo, 'POST', '/api/orders', { customer: 'carol-after-restart' });
    await textHas(kitchen, `kitchen-order-${fresh.id}`, 'carol-after-restart');
    await textHas(cashier, `order-${fresh.id}`, 'carol-after-restart');
    expect(pageErrors).toEqual([]);
  });
});
