/**
 * Starting and stopping `pgbroadcast demo` (its own private Postgres) for the
 * e2e tests, and its REST API. The binary: $PGBROADCAST_BIN, or the debug
 * build in cargo's target directory (see ./binary.ts); built with
 * `cargo build` if missing.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pgbroadcastBinary } from './binary.js';

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const repoDir = resolve(pkgDir, '../..');
const BIN = pgbroadcastBinary(repoDir);

export interface Demo {
  child: ChildProcess;
  port: number;
  pgUrl: string;
  httpUrl: string;
  wsUrl: string;
  stderr: string[];
}

export function ensureBinary(): void {
  if (existsSync(BIN)) return;
  if (process.env.PGBROADCAST_BIN) throw new Error(`PGBROADCAST_BIN=${BIN} does not exist`);
  const built = spawnSync('cargo', ['build'], { cwd: repoDir, stdio: 'inherit', timeout: 1_200_000 });
  if (built.status !== 0 || !existsSync(BIN)) throw new Error(`cargo build failed; no binary at ${BIN}`);
}

export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => ok(port));
    });
  });
}

/** Polls `fn` every 25 ms until it returns something truthy; `detail()` goes into the timeout's message. */
export async function waitFor<T>(
  what: string,
  fn: () => T | undefined | false | null,
  timeoutMs = 20_000,
  detail: () => string = () => '',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface StartDemoOptions {
  /** Listen on this port (e.g. to restart on the same one); default a free one. */
  port?: number;
  /** More arguments for `pgbroadcast demo`, e.g. `['--transport', 'wal']`. */
  args?: string[];
}

export async function startDemo({ port: wantedPort, args = [] }: StartDemoOptions = {}): Promise<Demo> {
  const port = wantedPort ?? (await freePort());
  const env = { ...process.env };
  delete env.DATABASE_URL; // its own private Postgres
  const child = spawn(BIN, ['demo', '--listen', `127.0.0.1:${port}`, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  const stderr: string[] = [];
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => stderr.push(d));
  let exited: string | null = null;
  child.once('exit', (code, sig) => (exited = `exited with ${code ?? sig}`));
  const died = () => {
    if (exited) throw new Error(`pgbroadcast ${exited}\n${stderr.join('').slice(-3000)}`);
  };
  try {
    const lines = await waitFor(
      'the server to print its Postgres URL and listen address',
      () => {
        died();
        const pg = /private Postgres \(removed on exit\): (postgres:\/\/\S+)/.exec(stdout);
        const http = /listening on (http:\/\/\S+)/.exec(stdout);
        return pg && http ? { pgUrl: pg[1]!, httpUrl: http[1]! } : undefined;
      },
      90_000,
    );
    // Writes are signalled once the LISTEN (with `--transport wal`, the WAL
    // stream) is in effect (/readyz 200); one committed before that is
    // covered by a `resync` instead, so a test waiting for its `created`
    // would wait for nothing.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const ok = await fetch(`${lines.httpUrl}/readyz`, { signal: AbortSignal.timeout(2_000) })
        .then((r) => r.status === 200)
        .catch(() => false);
      if (ok) break;
      died();
      if (Date.now() > deadline) throw new Error('timed out after 30000 ms waiting for /readyz');
      await new Promise((r) => setTimeout(r, 50));
    }
    return { child, port, stderr, wsUrl: `ws://127.0.0.1:${port}/ws/broadcast`, ...lines };
  } catch (e) {
    child.kill('SIGTERM');
    throw e;
  }
}

export async function stopDemo(demo: Demo, timeoutMs = 20_000): Promise<void> {
  const { child } = demo;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM'); // SIGTERM lets it remove its private Postgres
  const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs));
  if ((await Promise.race([exited, timer])) === 'timeout') {
    child.kill('SIGKILL');
    await exited;
  }
}

/** A JSON request to the demo's REST API; throws unless the status is `expected`. */
export async function api<T>(demo: Demo, method: string, path: string, body?: unknown, expected = method === 'POST' ? 201 : 200): Promise<T> {
  const res = await fetch(`${demo.httpUrl}${path}`, {
    method,
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  if (res.status !== expected) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

function psqlBin(): string {
  for (const p of ['/usr/bin/psql', '/usr/lib/postgresql/15/bin/psql']) if (existsSync(p)) return p;
  const pgBin = process.env.PGBROADCAST_PG_BIN;
  if (pgBin && existsSync(`${pgBin}/psql`)) return `${pgBin}/psql`;
  return 'psql';
}

/** Runs one statement in a new psql session; its output, unaligned. Throws with psql's message when it fails. */
export function sql(pgUrl: string, statement: string): string {
  const r = spawnSync(psqlBin(), [pgUrl, '-v', 'ON_ERROR_STOP=1', '-qAtc', statement], { encoding: 'utf8', timeout: 15_000 });
  if (r.status !== 0) throw new Error(`psql failed (${r.status ?? r.signal}): ${r.stderr || r.error?.message}\n${statement}`);
  return r.stdout.trim();
}
