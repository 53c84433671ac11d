/**
 * The demo page's bundle (src/demo/web/app.js, app.css) is committed so that
 * `pgbroadcast demo` needs no front-end build; rebuilding it (esbuild, pinned)
 * must give the committed files byte for byte, so it cannot go stale.
 */
import { spawnSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

describe('demo bundle', () => {
  it('is what `npm run build:demo` builds from demo/src', () => {
    const r = spawnSync(process.execPath, ['demo/build.mjs', '--check'], { cwd: pkgDir, encoding: 'utf8', timeout: 60_000 });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  });
});
