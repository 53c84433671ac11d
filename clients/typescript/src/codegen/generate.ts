/**
 * pgbroadcast-codegen: OpenAPI 3.1 document with `x-sync` → typed TypeScript
 * (`schema.ts` by openapi-typescript, `sync.ts` runtime, `index.ts` API).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import openapiTS, { astToString } from 'openapi-typescript';
import { buildModel, CodegenError, type SyncModel } from './model.js';
import { emitIndex, emitSync, header, type EmitOptions } from './emit.js';

export { buildModel, CodegenError, camelCase, pascalCase, plural } from './model.js';
export type { Entity, Operation, SyncModel } from './model.js';
export type { EmitOptions } from './emit.js';

export interface GeneratedFile {
  name: string;
  content: string;
}

/** Reads a document from an http(s) URL or a file path (JSON). */
export async function loadDocument(source: string): Promise<unknown> {
  let text: string;
  if (/^https?:\/\//i.test(source)) {
    const response = await fetch(source, { headers: { accept: 'application/json' } });
    if (!response.ok) throw new CodegenError(`GET ${source}: ${response.status} ${response.statusText}`);
    text = await response.text();
  } else {
    try {
      text = await readFile(source, 'utf8');
    } catch (error) {
      throw new CodegenError(`cannot read ${source}: ${(error as Error).message}`);
    }
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new CodegenError(`${source} is not JSON: ${(error as Error).message}`);
  }
}

async function emitSchema(document: unknown, model: SyncModel): Promise<string> {
  // openapi-typescript may annotate its input: give it a copy.
  const nodes = await openapiTS(structuredClone(document) as Parameters<typeof openapiTS>[0], { silent: true });
  return `${header(model, 'Types of the document, written by openapi-typescript.')}\n${astToString(nodes)}`;
}

/**
 * The files for `document`, sorted by name; the same document and options give
 * the same bytes. `{ electric: false }` (`--no-electric`): query collections
 * only, no `@tanstack/electric-db-collection` import, no `electricUrl` option.
 */
export async function generate(document: unknown, options: EmitOptions = {}): Promise<GeneratedFile[]> {
  const model = buildModel(document);
  const files: GeneratedFile[] = [
    { name: 'index.ts', content: emitIndex(model, options) },
    { name: 'schema.ts', content: await emitSchema(document, model) },
    { name: 'sync.ts', content: emitSync(model, options) },
  ];
  return files.sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** Loads `source`, generates and writes the files into `outDir`; returns the written paths. */
export async function generateToDir(source: string, outDir: string, options: EmitOptions = {}): Promise<string[]> {
  const files = await generate(await loadDocument(source), options);
  await mkdir(outDir, { recursive: true });
  const written: string[] = [];
  for (const file of files) {
    const path = join(outDir, file.name);
    await writeFile(path, file.content);
    written.push(path);
  }
  return written;
}
