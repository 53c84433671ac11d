// Bundles the demo app (demo/src/main.tsx) into src/demo/web/app.js and
// app.css at the repository root, which `pgbroadcast demo` embeds and serves.
//   node demo/build.mjs           write the bundle
//   node demo/build.mjs --check   exit 1 unless the committed bundle is what a build gives
// esbuild's output is deterministic for a given version (pinned in package.json).
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const demoDir = dirname(fileURLToPath(import.meta.url));
const pkgDir = resolve(demoDir, '..');
const outDir = resolve(pkgDir, '../../src/demo/web');

/** `@pgbroadcast/client[/sub]` → this package's sources (one copy, one React context). */
const clientSources = {
  name: 'pgbroadcast-client-sources',
  setup(b) {
    b.onResolve({ filter: /^@pgbroadcast\/client(\/.*)?$/ }, (args) => {
      const sub = args.path.slice('@pgbroadcast/client'.length).replace(/^\//, '') || 'index';
      for (const ext of ['.ts', '.tsx']) {
        const file = join(pkgDir, 'src', sub + ext);
        try {
          readFileSync(file);
          return { path: file };
        } catch {
          // next extension
        }
      }
      return { errors: [{ text: `no source for ${args.path} in ${join(pkgDir, 'src')}` }] };
    });
  },
};

export async function bundle(write) {
  return build({
    absWorkingDir: pkgDir,
    entryPoints: { app: 'demo/src/main.tsx' },
    outdir: outDir,
    bundle: true,
    minify: true,
    format: 'esm',
    target: ['es2022', 'chrome111', 'firefox111', 'safari16'],
    jsx: 'automatic',
    define: { 'process.env.NODE_ENV': '"production"' },
    legalComments: 'none',
    charset: 'utf8',
    sourcemap: false,
    logLevel: write ? 'info' : 'warning',
    tsconfig: 'demo/tsconfig.json',
    plugins: [clientSources],
    write,
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const check = process.argv.includes('--check');
  const result = await bundle(!check);
  if (check) {
    const stale = result.outputFiles.filter((f) => {
      let committed;
      try {
        committed = readFileSync(f.path);
      } catch {
        return true;
      }
      return !Buffer.from(f.contents).equals(committed);
    });
    if (stale.length > 0) {
      console.error(`stale: ${stale.map((f) => f.path).join(', ')}; run \`npm run build:demo\` in clients/typescript`);
      process.exit(1);
    }
    console.log('the committed demo bundle is up to date');
  }
}
