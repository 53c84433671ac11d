/**
 * Where the pgbroadcast binary under test is: $PGBROADCAST_BIN, or the debug
 * build in cargo's target directory as cargo itself reports it (so
 * CARGO_TARGET_DIR and `build.target-dir` in cargo's config are honoured).
 */
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';

export function pgbroadcastBinary(repoDir: string, env: NodeJS.ProcessEnv = process.env): string {
  if (env.PGBROADCAST_BIN) return resolve(repoDir, env.PGBROADCAST_BIN);
  const metadata = spawnSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], {
    cwd: repoDir,
    env,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  if (metadata.status !== 0) {
    throw new Error(`cargo metadata failed (is cargo installed?): ${metadata.stderr}`);
  }
  const { target_directory } = JSON.parse(metadata.stdout) as { target_directory: string };
  return join(target_directory, 'debug', 'pgbroadcast');
}
