import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { pgbroadcastBinary } from './binary.js';

const repoDir = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');

describe('the binary under test', () => {
  it('is found in the target directory cargo uses, CARGO_TARGET_DIR included', () => {
    const elsewhere = mkdtempSync(join(tmpdir(), 'pgbroadcast-target-'));
    const env = { ...process.env, PGBROADCAST_BIN: undefined, CARGO_TARGET_DIR: elsewhere };
    expect(pgbroadcastBinary(repoDir, env)).toBe(join(elsewhere, 'debug', 'pgbroadcast'));
  });

  it('is $PGBROADCAST_BIN when that is set', () => {
    const env = { ...process.env, PGBROADCAST_BIN: '/opt/pgbroadcast' };
    expect(pgbroadcastBinary(repoDir, env)).toBe('/opt/pgbroadcast');
  });
});
