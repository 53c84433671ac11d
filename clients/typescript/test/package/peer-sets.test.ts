/**
 * Peer dependency sets: the packed package against the OLDEST supported and
 * the NEWEST current TanStack/React versions, installed from the registry
 * into fresh throwaway apps (`npm install --no-audit --no-fund`; ~/.npm's
 * cache makes reruns fast).
 *
 * TanStack's DB packages pin an exact `@tanstack/db` each (query-db-collection
 * 1.4.7 → db 0.15.1, react-db 0.5.11 → db 0.15.1, ...), so a set is chosen so
 * that every package agrees on one `@tanstack/db` (checked with `npm ls`).
 * How the sets were computed: `npm view <pkg>@<range> version dependencies --json`.
 * - OLDEST: the lower bounds of package.json's peer ranges: @tanstack/query-core
 *   and @tanstack/react-query 5.0.0, @tanstack/query-db-collection 1.0.0 (it
 *   takes any @tanstack/db as a peer: db 0.5.0, with react-db 0.1.44 pinning
 *   the same), react 18.0.0.
 * - NEWEST: react-db's newest (0.5.11 → db 0.15.1) with the newest
 *   query-db-collection pinning that db (1.4.7; 1.4.8 pins 0.15.2, for which
 *   no react-db exists yet), query-core / react-query 5.108.4, react 19.2.0.
 * `@tanstack/electric-db-collection` is in no set: its only release in range
 * (0.4.10) pins db 0.9.2, and this package neither imports it nor needs it
 * (an electric collection fits `useLiveOrFrozen` structurally).
 *
 * Per set: the app type-checks (strict, `skipLibCheck: false`, the packed
 * declarations and every installed package's included) code using the
 * `/query` and `/db` entries with real TanStack types, and a Node script
 * imports (ESM) and requires (CJS) every entry and runs `bindQueryInvalidation`
 * with a real QueryClient and a fake client. Then, in the same app (no second
 * install), strict with `skipLibCheck: false` again:
 * - README examples (newest set): every ```ts / ```tsx block of README.md and
 *   clients/typescript/README.md (./readme-examples.ts, as package.test.ts
 *   does with the dev set) whose imports the app has, i.e. all but those
 *   importing `@tanstack/electric-db-collection` (and `ws`, not a TanStack
 *   concern);
 * - generated code (both sets): the app's own `node_modules/.bin/pgbroadcast-codegen`
 *   (with `openapi-typescript` installed as the package's dependency) writes
 *   the sync layer of test/codegen/fixtures/demo-openapi.json with
 *   `--no-electric`, and it type-checks with a small app using it.
 *
 * Skipped, saying why, only when the registry is unreachable.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importedPackages, readmeBlocks, writeReadmeExamples } from './readme-examples.js';
import { APP_COMPILER_OPTIONS, GENERATED_CODE_COMPILER_OPTIONS } from '../app-compiler-options.js';

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as {
  name: string;
  peerDependencies: Record<string, string>;
  dependencies: Record<string, string>;
};

interface PeerSet {
  name: string;
  deps: Record<string, string>;
  /** The one @tanstack/db every package of the set must resolve to. */
  db: string;
  /** Type-check the README examples (those whose imports the set has) in this set's app. */
  readme: boolean;
  /** Generate the demo document's sync layer with --no-electric and type-check it in this set's app. */
  codegen: boolean;
}

const SETS: PeerSet[] = [
  {
    name: 'oldest',
    db: '0.5.0',
    readme: false,
    codegen: true,
    deps: {
      '@tanstack/query-core': '5.0.0',
      '@tanstack/react-query': '5.0.0',
      '@tanstack/db': '0.5.0',
      '@tanstack/react-db': '0.1.44',
      '@tanstack/query-db-collection': '1.0.0',
      react: '18.0.0',
      // Not peers of this package: what a React 18 TypeScript app has. (@types/react
      // 18.0.0 itself no longer type-checks: its `scheduler/tracing` import is gone.)
      '@types/react': '18.3.32',
      typescript: '5.9.3',
    },
  },
  {
    name: 'newest',
    db: '0.15.1',
    readme: true,
    codegen: true,
    deps: {
      '@tanstack/query-core': '5.108.4',
      '@tanstack/react-query': '5.108.4',
      '@tanstack/db': '0.15.1',
      '@tanstack/react-db': '0.5.11',
      '@tanstack/query-db-collection': '1.4.7',
      react: '19.2.0',
      '@types/react': '19.3.3',
      typescript: '5.9.3',
    },
  },
];

/** Every entry the package exports (besides ./package.json). */
const ENTRIES = ['', '/client', '/react', '/query-core', '/query', '/db', '/tanstack'];

const APP = `
import { QueryClient } from '@tanstack/react-query';
import { createCollection } from '@tanstack/db';
import { queryCollectionOptions } from '@tanstack/query-db-collection';
import { BroadcastClient } from '@pgbroadcast/client';
import { bindQueryInvalidation, useBroadcastQueryInvalidation, type InvalidationTarget } from '@pgbroadcast/client/query';
import { bindQueryCollection, collectionSource, useBroadcastQueryCollection, useLiveOrFrozen } from '@pgbroadcast/client/db';

type Order = { id: number; status: string };
const client = new BroadcastClient({ url: 'ws://localhost/ws/broadcast' });
const queryClient = new QueryClient();
const keys = (id?: string): InvalidationTarget[] =>
  id ? [['orders', id], ['orders', 'list']] : [{ queryKey: ['orders'], refetchType: 'all' }];
const off: () => void = bindQueryInvalidation(client, queryClient, { channel: 'orders', queryKey: keys });
off();
const orders = createCollection(
  queryCollectionOptions<Order>({ queryKey: ['orders'], queryFn: async () => [] as Order[], queryClient, getKey: (o) => o.id }),
);
const offCollection: () => void = bindQueryCollection(client, orders, { channel: 'orders' });
offCollection();
export const first: Order | undefined = collectionSource(orders, 1).getSnapshot();
export function OrderView({ id }: { id: number }): string {
  useBroadcastQueryInvalidation({ channel: 'orders', entityId: id, queryKey: keys, queryClient, client });
  useBroadcastQueryCollection(orders, { channel: 'orders', client });
  const { data, isStale } = useLiveOrFrozen(orders, { channel: 'orders', entityId: id, key: id, live: false, client });
  return \`\${data?.status ?? ''}\${isStale ? '*' : ''}\`;
}
`;

const RUN = `
import { createRequire } from 'node:module';
import { QueryClient, QueryObserver } from '@tanstack/query-core';
const require = createRequire(import.meta.url);
const entries = ${JSON.stringify(ENTRIES)};
for (const e of entries) {
  const esm = await import('@pgbroadcast/client' + e);
  const cjs = require('@pgbroadcast/client' + e);
  if (Object.keys(esm).length === 0 || Object.keys(cjs).length === 0) throw new Error('empty entry ' + e);
}
const { bindQueryInvalidation } = await import('@pgbroadcast/client/query');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const check = (ok, what) => { if (!ok) throw new Error('failed: ' + what); };

// A fake client: what bindQueryInvalidation uses of a BroadcastClient.
const handlers = new Map();
const statusListeners = new Set();
const fake = {
  subscribe(topic, handler) { handlers.set(topic, handler); return () => handlers.delete(topic); },
  onTopicStatus(listener) { statusListeners.add(listener); return () => statusListeners.delete(listener); },
};
const signal = (event, txid) => handlers.get('orders')({ channel: 'orders', event, entityId: '1', txid, payload: {}, resync: false });

const queryClient = new QueryClient();
let db = 0;
let fetches = 0;
const observer = new QueryObserver(queryClient, {
  queryKey: ['orders'],
  staleTime: Infinity,
  queryFn: async () => { fetches += 1; const v = db; await sleep(20); return v; },
});
const unsubscribe = observer.subscribe(() => {});
await sleep(100);
check(queryClient.getQueryData(['orders']) === 0, 'initial fetch');
fetches = 0;
const off = bindQueryInvalidation(fake, queryClient, { channel: 'orders', queryKey: () => [['orders']] });
check(handlers.has('orders') && statusListeners.size === 1, 'subscribed');

// One transaction, two signals in two macrotasks: one refetch.
db = 1;
signal('updated', 7);
await sleep(5);
signal('status_changed', 7);
await sleep(150);
check(fetches === 1, 'one fetch for one transaction, got ' + fetches);
check(queryClient.getQueryData(['orders']) === 1, 'data of the transaction');

// The topic going live refetches at once.
db = 2;
for (const l of statusListeners) l('orders', 'live');
await sleep(100);
check(fetches === 2, 'refetch on live, got ' + fetches);
check(queryClient.getQueryData(['orders']) === 2, 'data after live');

off();
check(handlers.size === 0 && statusListeners.size === 0, 'unsubscribed');
unsubscribe();
queryClient.clear();
console.log('ok');
`;

/**
 * Packages some README examples import that no set installs, with why; a
 * block importing one is left to package.test.ts (the dev set).
 */
const NOT_IN_SETS: Record<string, string> = {
  '@tanstack/electric-db-collection': 'its only release, 0.4.10, pins @tanstack/db 0.9.2',
  ws: "Node's WebSocket for BroadcastClient: no TanStack types involved",
};

/** A small app using the generated (--no-electric) sync layer of demo-openapi.json. */
const CODEGEN_APP = `
import { configureSync, getOrderCollection, orderApi, orderKeys, SyncProvider, useOrder, useOrders, type Order } from './sync/index.js';

configureSync({ broadcastUrl: 'ws://localhost:8080/ws/broadcast', apiUrl: 'http://localhost:8080' });

export const statusOf = (o: Order): string => o.status;
export const keys = orderKeys.detail(1);
export const create = (): Promise<unknown> => orderApi.create({ customer: 'x', items: [] });
export const size = (): number => getOrderCollection().size;

function OrderRow({ id }: { id: number }) {
  const { data, isStale, refresh } = useOrder(id, { live: false });
  return <li onClick={refresh}>{data?.customer}{isStale ? '*' : ''}</li>;
}

function Orders() {
  const { data, isLoading } = useOrders();
  return isLoading ? <p>…</p> : <ul>{data.map((o) => <OrderRow key={o.id} id={o.id} />)}</ul>;
}

export function App() {
  return <SyncProvider><Orders /></SyncProvider>;
}
`;


let work: string | undefined;
let tarball = '';
let skipReason: string | null = null;

function registryReachable(): string | null {
  const r = spawnSync('npm', ['view', '@tanstack/query-core@5.0.0', 'version'], { encoding: 'utf8', timeout: 30_000 });
  if (r.status === 0 && r.stdout.trim() === '5.0.0') return null;
  return `npm registry unreachable (npm view exited ${r.status ?? r.signal}: ${(r.stderr || r.error?.message || '').trim().split('\n')[0]})`;
}

beforeAll(() => {
  skipReason = registryReachable();
  if (skipReason) {
    console.warn(`peer-sets: SKIPPED: ${skipReason}`);
    return;
  }
  work = mkdtempSync(join(tmpdir(), 'pgbroadcast-client-peers-'));
  // Pack a copy (prepare builds there), as test/package/package.test.ts does.
  const staging = join(work, 'package-src');
  mkdirSync(staging);
  for (const f of ['package.json', 'README.md', 'tsconfig.json', 'tsconfig.build.json', 'tsconfig.cjs.json', 'src']) {
    cpSync(join(pkgDir, f), join(staging, f), { recursive: true });
  }
  symlinkSync(join(pkgDir, 'node_modules'), join(staging, 'node_modules'), 'dir');
  const out = execFileSync('npm', ['pack', '--json', '--pack-destination', work], {
    cwd: staging,
    encoding: 'utf8',
    timeout: 120_000,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const info = JSON.parse(out.slice(out.indexOf('['))) as { filename: string }[];
  tarball = join(work, info[0]!.filename);
}, 150_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('peer sets', () => {
  it('cover every peer range: each set satisfies package.json (checked by npm install below: no peer conflict)', () => {
    for (const set of SETS) {
      for (const name of Object.keys(pkg.peerDependencies)) expect(set.deps[name], `${set.name}: ${name}`).toBeDefined();
    }
  });

  for (const set of SETS) {
    it(`${set.name} set: installs with one @tanstack/db, type-checks (skipLibCheck: false) and runs`, (ctx) => {
      if (skipReason) {
        console.warn(`peer-sets ${set.name}: SKIPPED: ${skipReason}`);
        ctx.skip();
      }
      const dir = join(work!, set.name);
      mkdirSync(dir);
      writeFileSync(
        join(dir, 'package.json'),
        JSON.stringify({ name: `peers-${set.name}`, private: true, type: 'module', dependencies: { ...set.deps, [pkg.name]: `file:${tarball}` } }, null, 2),
      );
      const started = Date.now();
      // --strict-peer-deps: a set outside the peer ranges of this package (or of TanStack's) fails here.
      const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--strict-peer-deps'], {
        cwd: dir,
        encoding: 'utf8',
        timeout: 150_000,
      });
      expect(install.status, install.stdout + install.stderr).toBe(0);
      console.log(`peer-sets ${set.name}: npm install ${((Date.now() - started) / 1000).toFixed(1)} s`);

      // Every package agrees on one @tanstack/db.
      const ls = spawnSync('npm', ['ls', '@tanstack/db', '--all', '--json'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
      const versions = new Set<string>();
      const walk = (node: { version?: string; dependencies?: Record<string, unknown> }, name?: string) => {
        if (name === '@tanstack/db' && node.version) versions.add(node.version);
        for (const [n, child] of Object.entries(node.dependencies ?? {})) walk(child as typeof node, n);
      };
      walk(JSON.parse(ls.stdout));
      expect([...versions]).toEqual([set.db]);
      for (const [name, version] of Object.entries(set.deps)) {
        const installed = JSON.parse(readFileSync(join(dir, 'node_modules', name, 'package.json'), 'utf8')).version;
        expect(installed, name).toBe(version);
      }

      writeFileSync(join(dir, 'app.tsx'), APP);
      writeFileSync(
        join(dir, 'tsconfig.json'),
        JSON.stringify({ compilerOptions: APP_COMPILER_OPTIONS, files: ['app.tsx'] }),
      );
      const tsc = spawnSync(process.execPath, [join(dir, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json', '--pretty', 'false', '--listFiles'], {
        cwd: dir,
        encoding: 'utf8',
        timeout: 90_000,
      });
      expect(tsc.stdout + tsc.stderr).not.toContain('error TS');
      expect(tsc.status).toBe(0);
      for (const f of ['@pgbroadcast/client/dist/query.d.ts', '@pgbroadcast/client/dist/db.d.ts', '@tanstack/query-db-collection/', '@tanstack/db/']) {
        expect(tsc.stdout, f).toContain(f);
      }

      writeFileSync(join(dir, 'run.mjs'), RUN);
      const run = spawnSync(process.execPath, ['run.mjs'], { cwd: dir, encoding: 'utf8', timeout: 30_000 });
      expect(run.stderr).toBe('');
      expect(run.stdout.trim()).toBe('ok');
      expect(run.status).toBe(0);

      const tscIn = (project: string) =>
        spawnSync(process.execPath, [join(dir, 'node_modules/typescript/bin/tsc'), '-p', project, '--pretty', 'false', '--listFiles'], {
          cwd: dir,
          encoding: 'utf8',
          timeout: 90_000,
        });

      if (set.readme) {
        // The README examples whose imports this app has (all but Electric's and ws's).
        const all = readmeBlocks();
        const blocks = all.filter((b) => !importedPackages(b).some((name) => name in NOT_IN_SETS));
        const left = all.filter((b) => !blocks.includes(b));
        console.log(
          `peer-sets ${set.name}: README examples: ${blocks.length} type-checked, ${left.length} left to the dev set (${left.map((b) => `${b.readme}:${b.line} imports ${importedPackages(b).filter((n) => n in NOT_IN_SETS).join(', ')}`).join('; ')})`,
        );
        // At the time of writing: 10 blocks, 7 checked here (2 import Electric, 1 ws).
        expect(blocks.length).toBeGreaterThanOrEqual(7);
        for (const block of blocks) {
          for (const name of importedPackages(block)) {
            expect(existsSync(join(dir, 'node_modules', name, 'package.json')), `${block.readme}:${block.line} imports ${name}, not installed`).toBe(true);
          }
        }
        mkdirSync(join(dir, 'readme'));
        const { files, report } = writeReadmeExamples(join(dir, 'readme'), blocks);
        writeFileSync(join(dir, 'readme/tsconfig.json'), JSON.stringify({ compilerOptions: APP_COMPILER_OPTIONS, files }));
        const r = tscIn('readme/tsconfig.json');
        expect(report((r.stdout + r.stderr).replace(/^readme\//gm, ''))).not.toContain('error TS');
        expect(r.status).toBe(0);
        expect(r.stdout).toContain('@pgbroadcast/client/dist/db.d.ts');
        expect(r.stdout).not.toContain('electric-db-collection');
      }

      if (set.codegen) {
        // openapi-typescript came with the package, as its dependency (hoisted or nested).
        const ot = ['node_modules/openapi-typescript', `node_modules/${pkg.name}/node_modules/openapi-typescript`]
          .map((p) => join(dir, p, 'package.json'))
          .find((p) => existsSync(p));
        expect(ot, 'openapi-typescript installed').toBeDefined();
        expect(JSON.parse(readFileSync(ot!, 'utf8')).version).toBe(pkg.dependencies['openapi-typescript']);
        // The package's own bin, as `npx pgbroadcast-codegen` runs it in the app.
        const gen = spawnSync(
          join(dir, 'node_modules/.bin/pgbroadcast-codegen'),
          [join(pkgDir, 'test/codegen/fixtures/demo-openapi.json'), '--no-electric', '-o', 'codegen/sync'],
          { cwd: dir, encoding: 'utf8', timeout: 60_000 },
        );
        expect(gen.stderr).toBe('');
        expect(gen.status).toBe(0);
        expect(gen.stdout).toContain('index.ts');
        expect(readFileSync(join(dir, 'codegen/sync/index.ts'), 'utf8')).not.toContain('electric-db-collection');
        writeFileSync(join(dir, 'codegen/app.tsx'), CODEGEN_APP);
        writeFileSync(
          join(dir, 'codegen/tsconfig.json'),
          JSON.stringify({
            compilerOptions: GENERATED_CODE_COMPILER_OPTIONS,
            include: ['.'],
          }),
        );
        const r = tscIn('codegen/tsconfig.json');
        expect(r.stdout + r.stderr).not.toContain('error TS');
        expect(r.status).toBe(0);
        for (const f of ['codegen/sync/index.ts', 'codegen/sync/sync.ts', 'codegen/sync/schema.ts', '@tanstack/db/', '@tanstack/react-db/', '@tanstack/query-db-collection/']) {
          expect(r.stdout, f).toContain(f);
        }
      }
      console.log(`peer-sets ${set.name}: done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }, 240_000);
  }
});
