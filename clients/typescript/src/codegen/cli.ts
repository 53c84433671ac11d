#!/usr/bin/env node
/**
 * `pgbroadcast-codegen <url-or-file> -o <dir>`: writes the typed sync API
 * (index.ts, schema.ts, sync.ts) of an OpenAPI 3.1 document with `x-sync`.
 */
import { CodegenError, generateToDir } from './generate.js';

const USAGE = `usage: pgbroadcast-codegen <openapi-url-or-file> -o <out-dir> [--no-electric]

Reads an OpenAPI 3.1 document whose path items carry "x-sync" and writes
<out-dir>/index.ts (typed API, collections, hooks), schema.ts (openapi-typescript)
and sync.ts (configureSync, SyncProvider). Example:
  npx pgbroadcast-codegen http://localhost:8080/openapi.json -o src/sync

Options:
  -o, --out <dir>   where to write the files
  --no-electric     query collections only: no import of @tanstack/electric-db-collection
                    and no electricUrl option (for TanStack DB newer than the 0.9 line:
                    electric-db-collection 0.4.10 pins @tanstack/db 0.9.2)`;

export function parseArgs(argv: string[]): { source: string; out: string; electric: boolean } | { help: true } | { error: string } {
  let source: string | undefined;
  let out: string | undefined;
  let electric = true;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '-h' || arg === '--help') return { help: true };
    if (arg === '--no-electric') {
      electric = false;
    } else if (arg === '-o' || arg === '--out') {
      out = argv[++i];
      if (out === undefined) return { error: `${arg} needs a directory` };
    } else if (arg.startsWith('--out=')) {
      out = arg.slice('--out='.length);
    } else if (arg.startsWith('-') && arg !== '-') {
      return { error: `unknown option ${arg}` };
    } else if (source === undefined) {
      source = arg;
    } else {
      return { error: `unexpected argument ${arg}` };
    }
  }
  if (source === undefined) return { error: 'missing <openapi-url-or-file>' };
  if (out === undefined) return { error: 'missing -o <out-dir>' };
  return { source, out, electric };
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if ('help' in args) {
    console.log(USAGE);
    return 0;
  }
  if ('error' in args) {
    console.error(`pgbroadcast-codegen: ${args.error}\n\n${USAGE}`);
    return 2;
  }
  try {
    const written = await generateToDir(args.source, args.out, { electric: args.electric });
    for (const path of written) console.log(`wrote ${path}`);
    return 0;
  } catch (error) {
    if (error instanceof CodegenError) {
      console.error(`pgbroadcast-codegen: ${error.message}`);
      return 1;
    }
    throw error;
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  },
);
