/**
 * Packaging: what a consumer gets from `npm pack` (and so from the registry).
 *
 * One sequential file: it packs a copy of the package once (running
 * `prepare`, which builds dist/ in that copy), unpacks the tarball into throwaway consumer projects under
 * the OS temp dir, and checks there, never against this repository's own
 * node_modules:
 * - the tarball holds the ESM build, the CJS build and the types of both;
 * - `require()` of every CJS entry and `import()` of every ESM entry work from
 *   a Node child process; the root and `/client` entries with nothing else
 *   installed;
 * - a TanStack-Query-only consumer (only `@tanstack/query-core` installed, no
 *   TanStack DB package resolvable) type-checks with `skipLibCheck: false`, as
 *   ESM and as CJS; importing `/db` there fails (the control);
 * - every ```ts / ```tsx example in the repository's README.md and this
 *   package's README.md type-checks (strict, `skipLibCheck: false`,
 *   `jsx: react-jsx`, bundler resolution) as its own module against the
 *   tarball plus React and the TanStack packages (blocks, preambles and
 *   skips: ./readme-examples.ts, shared with peer-sets.test.ts).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { README_FILES, README_PREAMBLES, README_SKIPS, readmeBlocks, writeReadmeExamples } from './readme-examples.js';
import { APP_COMPILER_OPTIONS } from '../app-compiler-options.js';

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as {
  name: string;
  peerDependencies: Record<string, string>;
  peerDependenciesMeta: Record<string, { optional?: boolean }>;
};
const tsc = join(pkgDir, 'node_modules/typescript/bin/tsc');

/** Entry → names it must export (a sample, not the whole surface). */
const ENTRIES: Record<string, string[]> = {
  '': ['BroadcastClient', 'initBroadcast', 'getBroadcastClient', 'subscribeToBroadcast'],
  '/client': ['BroadcastClient', 'initBroadcast', 'getBroadcastClient', 'subscribeToBroadcast'],
  '/react': ['BroadcastProvider', 'useBroadcastState', 'useBroadcastSync', 'useBroadcastClient'],
  '/query-core': ['bindQueryInvalidation', 'keysForSignal', 'toInvalidateFilters'],
  '/query': ['bindQueryInvalidation', 'useBroadcastQueryInvalidation', 'keysForSignal', 'toInvalidateFilters'],
  '/db': ['bindQueryCollection', 'useBroadcastQueryCollection', 'collectionSource', 'useLiveOrFrozen', 'configureSync'],
  '/tanstack': ['bindQueryInvalidation', 'useBroadcastQueryInvalidation', 'bindQueryCollection', 'useLiveOrFrozen', 'configureSync'],
};
/** Packages each entry needs at run time (besides itself). */
const RUNTIME_DEPS: Record<string, string[]> = {
  '': [],
  '/client': [],
  '/react': ['react'],
  '/query-core': [],
  '/query': ['react', '@tanstack/react-query', '@tanstack/query-core'],
  '/db': ['react'],
  '/tanstack': ['react', '@tanstack/react-query', '@tanstack/query-core'],
};

let work: string;
let tarball: string;
let packedFiles: string[];

/** A consumer project: the unpacked tarball plus `deps` linked from this node_modules. */
function consumer(name: string, deps: string[], copy = false): string {
  const dir = join(work, name);
  const nm = join(dir, 'node_modules');
  mkdirSync(join(nm, '@pgbroadcast/client'), { recursive: true });
  execFileSync('tar', ['-xzf', tarball, '-C', join(nm, '@pgbroadcast/client'), '--strip-components=1'], { timeout: 30_000 });
  for (const dep of deps) {
    mkdirSync(dirname(join(nm, dep)), { recursive: true });
    if (copy) cpSync(join(pkgDir, 'node_modules', dep), join(nm, dep), { recursive: true });
    else symlinkSync(join(pkgDir, 'node_modules', dep), join(nm, dep), 'dir');
  }
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `consumer-${name}`, private: true }) + '\n');
  return dir;
}

function node(cwd: string, args: string[]) {
  return spawnSync(process.execPath, args, { cwd, encoding: 'utf8', timeout: 30_000 });
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'pgbroadcast-client-pack-'));
  // Pack a copy of the package (sources, configs, this node_modules linked),
  // so the build `prepare` runs never touches this working tree's dist/ (nor
  // races another test run building it).
  const staging = join(work, 'package-src');
  mkdirSync(staging);
  for (const f of ['package.json', 'README.md', 'tsconfig.json', 'tsconfig.build.json', 'tsconfig.cjs.json', 'src']) {
    cpSync(join(pkgDir, f), join(staging, f), { recursive: true });
  }
  symlinkSync(join(pkgDir, 'node_modules'), join(staging, 'node_modules'), 'dir');
  // Runs `prepare` (the build), as `npm publish` would.
  const out = execFileSync('npm', ['pack', '--json', '--pack-destination', work], {
    cwd: staging,
    encoding: 'utf8',
    timeout: 120_000,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const info = JSON.parse(out.slice(out.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  tarball = join(work, info[0]!.filename);
  packedFiles = info[0]!.files.map((f) => f.path);
}, 150_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('npm pack', () => {
  it('contains the ESM and CJS builds with their types', () => {
    expect(existsSync(tarball)).toBe(true);
    const must = ['package.json', 'README.md', 'dist/cjs/package.json'];
    for (const entry of ['index', 'client', 'react', 'query', 'db', 'tanstack']) {
      must.push(`dist/${entry}.js`, `dist/${entry}.d.ts`, `dist/cjs/${entry}.js`, `dist/cjs/${entry}.d.ts`);
    }
    expect(packedFiles).toEqual(expect.arrayContaining(must));
    expect(packedFiles.some((f) => f.startsWith('test/'))).toBe(false);
  });

  it('marks dist/cjs as CommonJS inside a "type": "module" package', () => {
    const dir = consumer('marker', []);
    const root = join(dir, 'node_modules/@pgbroadcast/client');
    expect(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).type).toBe('module');
    expect(JSON.parse(readFileSync(join(root, 'dist/cjs/package.json'), 'utf8'))).toEqual({ type: 'commonjs' });
  });
});

describe('peer dependencies', () => {
  it('are ranges, only packages src imports, all optional', () => {
    const imported = new Set<string>();
    const files = readdirSync(join(pkgDir, 'src')).filter((f) => /\.tsx?$/.test(f));
    expect(files).toContain('query-core.ts');
    for (const file of files) {
      const src = readFileSync(join(pkgDir, 'src', file), 'utf8');
      for (const m of src.matchAll(/from '([^'.][^']*)'/g)) imported.add(m[1]!.startsWith('@') ? m[1]!.split('/').slice(0, 2).join('/') : m[1]!.split('/')[0]!);
    }
    expect(Object.keys(pkg.peerDependencies).sort()).toEqual([...imported].filter((n) => !n.startsWith('node:')).sort());
    for (const [name, range] of Object.entries(pkg.peerDependencies)) {
      expect(range, name).toMatch(/[\^~<>|]/);
      expect(pkg.peerDependenciesMeta[name]?.optional, name).toBe(true);
    }
  });
});

describe('CommonJS and ESM entries from a Node child process', () => {
  for (const [entry, names] of Object.entries(ENTRIES)) {
    const spec = `${pkg.name}${entry}`;
    it(`require('${spec}') and import('${spec}')`, () => {
      const dir = consumer(`run${entry.replace('/', '-') || '-root'}`, RUNTIME_DEPS[entry]!);
      const check = `const missing = ${JSON.stringify(names)}.filter((n) => typeof m[n] !== 'function'); if (missing.length) { console.error('missing', missing); process.exit(1); }`;
      const cjs = node(dir, ['-e', `const m = require(${JSON.stringify(spec)}); ${check} console.log(require.resolve(${JSON.stringify(spec)}));`]);
      expect(cjs.stderr).toBe('');
      expect(cjs.status).toBe(0);
      expect(cjs.stdout).toContain(join('dist', 'cjs'));
      const esm = node(dir, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(spec)}); ${check} console.log(import.meta.resolve(${JSON.stringify(spec)}));`]);
      expect(esm.stderr).toBe('');
      expect(esm.status).toBe(0);
      expect(esm.stdout).not.toContain('/dist/cjs/');
      // The CJS and ESM builds are the same client.
      if (entry === '' || entry === '/client') {
        const both = node(dir, ['-e', `const c = require(${JSON.stringify(spec)}); import(${JSON.stringify(spec)}).then((e) => console.log(Object.keys(c).sort().join() === Object.keys(e).filter((k) => k !== 'default' && k !== 'module.exports').sort().join()));`]);
        expect(both.stdout.trim()).toBe('true');
      }
    }, 60_000);
  }
});

describe('TanStack-Query-only consumer type-checks (skipLibCheck: false)', () => {
  let dir: string;
  beforeAll(() => {
    // Only the tarball and a copy of @tanstack/query-core: no DB package, no React, no @types/*.
    dir = consumer('query-only', ['@tanstack/query-core'], true);
    const body = `
const client = new BroadcastClient({ url: 'ws://localhost/ws' });
const target: InvalidationTarget = ['orders'];
const queryClient: InvalidatingQueryClient = { invalidateQueries: async () => {} };
const unbind: () => void = bindQueryInvalidation(client, queryClient, { channel: 'orders', queryKey: () => [target] });
unbind();
client.disconnect();
`;
    writeFileSync(
      join(dir, 'esm.mts'),
      `import { BroadcastClient } from '@pgbroadcast/client';\nimport { bindQueryInvalidation, type InvalidationTarget, type InvalidatingQueryClient } from '@pgbroadcast/client/query';\n${body}`,
    );
    writeFileSync(
      join(dir, 'cjs.cts'),
      `import { BroadcastClient } from '@pgbroadcast/client';\nimport { bindQueryInvalidation, type InvalidationTarget, type InvalidatingQueryClient } from '@pgbroadcast/client/query';\n${body}`,
    );
    writeFileSync(
      join(dir, 'core.mts'),
      `import { BroadcastClient } from '@pgbroadcast/client';\nimport { QueryClient } from '@tanstack/query-core';\nimport { bindQueryInvalidation, type InvalidationTarget } from '@pgbroadcast/client/query-core';\n${body.replace('const queryClient: InvalidatingQueryClient = { invalidateQueries: async () => {} };', 'const queryClient = new QueryClient();')}`,
    );
    writeFileSync(join(dir, 'db.mts'), `import { useLiveOrFrozen } from '@pgbroadcast/client/db';\nexport const f = useLiveOrFrozen;\n`);
    const base = {
      target: 'ES2022',
      lib: ['ES2022', 'DOM'],
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      strict: true,
      skipLibCheck: false,
      noEmit: true,
      types: [],
    };
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: base, files: ['esm.mts', 'cjs.cts', 'core.mts'] }, null, 2));
    writeFileSync(join(dir, 'tsconfig.db.json'), JSON.stringify({ compilerOptions: base, files: ['db.mts'] }, null, 2));
  });

  it('has no TanStack DB package resolvable', () => {
    for (const name of ['@tanstack/db', '@tanstack/query-db-collection', '@tanstack/electric-db-collection', 'react']) {
      const r = node(dir, ['-e', `require.resolve(${JSON.stringify(name)})`]);
      expect(r.status, name).not.toBe(0);
    }
    expect(node(dir, ['-e', `require.resolve('@tanstack/query-core')`]).status).toBe(0);
  });

  it('root + /query, as ESM and as CJS', () => {
    const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json', '--skipLibCheck', 'false', '--listFiles'], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.stdout + r.stderr).not.toContain('error TS');
    expect(r.status).toBe(0);
    // Both the ESM and the CJS declarations were checked.
    expect(r.stdout).toMatch(/@pgbroadcast\/client\/dist\/query\.d\.ts/);
    expect(r.stdout).toMatch(/@pgbroadcast\/client\/dist\/cjs\/query\.d\.ts/);
    expect(r.stdout).toMatch(/@pgbroadcast\/client\/dist\/query-core\.d\.ts/);
  }, 90_000);

  it('/query-core binds a real QueryClient with no React installed (a Vue, Solid or Svelte Query app)', () => {
    const script = `
import { BroadcastClient } from '@pgbroadcast/client';
import { QueryClient } from '@tanstack/query-core';
import { bindQueryInvalidation } from '@pgbroadcast/client/query-core';
const client = new BroadcastClient({ url: 'ws://127.0.0.1:9/ws' });
const queryClient = new QueryClient();
const unbind = bindQueryInvalidation(client, queryClient, { channel: 'orders', queryKey: () => [['orders']] });
unbind();
client.disconnect();
console.log('bound');
`;
    const r = node(dir, ['--input-type=module', '-e', script]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('bound');
    const cjs = node(dir, ['-e', `const { bindQueryInvalidation } = require('@pgbroadcast/client/query-core'); console.log(typeof bindQueryInvalidation);`]);
    expect(cjs.stdout.trim()).toBe('function');
    // The React entry cannot load there: /query-core is what such an app imports.
    expect(node(dir, ['--input-type=module', '-e', `await import('@pgbroadcast/client/query')`]).status).not.toBe(0);
  });

  it('control: /db there does not type-check (its types need the DB packages)', () => {
    const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.db.json', '--skipLibCheck', 'false'], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status).not.toBe(0);
    expect(r.stdout).toMatch(/@tanstack\/(query-db-collection|electric-db-collection)/);
  }, 90_000);
});

// ------------------------------------------------------------ README examples

/** Packages a README example may import (linked from this node_modules), with the types they need. */
const README_DEPS = [
  'react',
  '@types/react',
  '@tanstack/react-query',
  '@tanstack/query-core',
  '@tanstack/react-db',
  '@tanstack/db',
  '@tanstack/electric-db-collection',
  '@tanstack/query-db-collection',
  'ws',
  '@types/ws',
  '@types/node',
];

describe('README examples type-check against the packed package (strict, skipLibCheck: false)', () => {
  const blocks = readmeBlocks();

  it('finds the examples, and every preamble and skip marker names exactly one of them', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(10);
    for (const readme of README_FILES) expect(blocks.some((b) => b.readme === readme), readme).toBe(true);
    for (const { readme, marker } of [...README_PREAMBLES, ...README_SKIPS]) {
      const hits = blocks.filter((b) => b.readme === readme && b.code.includes(marker));
      expect(hits.length, `${readme}: marker ${JSON.stringify(marker)}`).toBe(1);
    }
  });

  it('every ts/tsx block compiles as its own module', () => {
    const dir = consumer('readme', README_DEPS);
    const { files, report } = writeReadmeExamples(dir, blocks);
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify(
        {
          compilerOptions: APP_COMPILER_OPTIONS,
          files,
        },
        null,
        2,
      ),
    );
    const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json', '--pretty', 'false'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
    // Each error points at the README line it comes from.
    expect(report(r.stdout + r.stderr)).not.toContain('error TS');
    expect(r.status).toBe(0);
  }, 90_000);
});
