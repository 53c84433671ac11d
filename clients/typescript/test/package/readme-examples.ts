/**
 * The ```ts / ```tsx examples of the repository's README.md and this
 * package's README.md, as modules to type-check against a packed package.
 * Shared by package.test.ts (the dev set: every block) and peer-sets.test.ts
 * (the newest set: the blocks whose imports that app has, i.e. not
 * `@tanstack/electric-db-collection`).
 *
 * Not a test file itself (vitest's package project runs `*.test.ts` only).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * The ```ts / ```tsx blocks of these READMEs are type-checked against the
 * packed package, each as its own module, so an example that imports a name
 * an entry point does not export, from the wrong entry (a React hook from the
 * root entry), or passes options the API does not take, fails.
 */
export const README_FILES = ['../../README.md', 'README.md'] as const;
export type ReadmeFile = (typeof README_FILES)[number];

/**
 * Per-block preambles for fragments: names the example takes from the app
 * around it (never names the package exports: those the block imports
 * itself). Keyed by the README and a marker, a string only that block
 * contains; a marker matching no block or several fails package.test.ts, so a
 * changed example cannot silently lose (or borrow) its preamble.
 */
export const README_PREAMBLES: { readme: ReadmeFile; marker: string; preamble: string }[] = [
  {
    readme: '../../README.md',
    marker: 'function KitchenDisplay()',
    preamble: [
      `type Order = { id: number; customer: string; status: string };`,
      `declare function fetchOrders(): Promise<Order[]>;`,
      `declare function OrderList(props: { orders: Order[] | undefined }): React.JSX.Element;`,
    ].join('\n'),
  },
  {
    readme: 'README.md',
    marker: 'const client = new BroadcastClient({',
    preamble: [
      `declare const session: { jwt?: string };`,
      `declare const jwt: string;`,
      `declare function refetchAllOrders(): void;`,
      `declare function refetchOrder(id: string): void;`,
    ].join('\n'),
  },
  {
    readme: 'README.md',
    marker: 'initBroadcast({ url: "wss://app.example/ws/broadcast", getToken })',
    preamble: `declare const getToken: () => Promise<string | null>;`,
  },
  {
    readme: 'README.md',
    marker: 'function ConnectionBadge()',
    preamble: [`declare const getToken: () => Promise<string | null>;`, `declare function App(): React.JSX.Element;`].join('\n'),
  },
  {
    readme: 'README.md',
    marker: 'onInvalidate: (id) =>',
    preamble: [`import type { QueryClient } from "@tanstack/react-query";`, `declare const queryClient: QueryClient;`].join('\n'),
  },
  {
    readme: 'README.md',
    marker: 'function SettingsPage()',
    preamble: [
      `type Settings = Record<string, unknown>;`,
      `declare function SettingsView(props: { settings: Settings | undefined; onEdit: () => void }): React.JSX.Element;`,
      `declare function SettingsForm(props: { initial: Settings | undefined; onDone: () => void }): React.JSX.Element;`,
    ].join('\n'),
  },
  {
    readme: 'README.md',
    marker: 'const { broadcast, electricShapeOptions } = configureSync({',
    preamble: `declare const getToken: () => Promise<string | null>;`,
  },
];

/**
 * Blocks that are not TypeScript meant to compile, by README and marker, with
 * the reason. None at present: every ts/tsx block is a compiling example.
 */
export const README_SKIPS: { readme: ReadmeFile; marker: string; reason: string }[] = [];

export interface ReadmeBlock {
  readme: ReadmeFile;
  /** 1-based line of the block's first code line in the README. */
  line: number;
  lang: 'ts' | 'tsx';
  code: string;
}

export function readmeBlocks(): ReadmeBlock[] {
  const blocks: ReadmeBlock[] = [];
  for (const readme of README_FILES) {
    const lines = readFileSync(join(pkgDir, readme), 'utf8').split('\n');
    for (let i = 0; i < lines.length; i++) {
      const open = /^```(\w*)\s*$/.exec(lines[i]!);
      if (!open) continue;
      const end = lines.findIndex((l, j) => j > i && /^```\s*$/.test(l));
      if (end < 0) throw new Error(`${readme}:${i + 1}: unclosed code block`);
      const lang = open[1]!;
      if (lang === 'ts' || lang === 'tsx') blocks.push({ readme, line: i + 2, lang, code: lines.slice(i + 1, end).join('\n') });
      i = end;
    }
  }
  return blocks;
}

/** The packages a block imports (bare specifiers, `@scope/name` or `name`; preamble included). */
export function importedPackages(block: ReadmeBlock): string[] {
  const preamble = README_PREAMBLES.find((p) => p.readme === block.readme && block.code.includes(p.marker))?.preamble ?? '';
  const names = new Set<string>();
  for (const m of `${preamble}\n${block.code}`.matchAll(/^\s*import\b[^'"]*?\bfrom\s+["']([^"'.][^"']*)["']/gm)) {
    const spec = m[1]!;
    names.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
  }
  return [...names].sort();
}

/** A README block's path for error messages, from the repository root. */
const where = (readme: ReadmeFile) => (readme === 'README.md' ? 'clients/typescript/README.md' : 'README.md');

/**
 * Writes `blocks` (less README_SKIPS) into `dir`, each as its own module with
 * its preamble; returns the file names (for a tsconfig's `files`) and
 * `report`, which points tsc's `file(line,col)` at the README line.
 */
export function writeReadmeExamples(dir: string, blocks: ReadmeBlock[]): { files: string[]; report: (tscOutput: string) => string } {
  const files: string[] = [];
  /** Generated file → where its block starts in the README, and the preamble's length. */
  const origin = new Map<string, { block: ReadmeBlock; offset: number }>();
  for (const block of blocks) {
    if (README_SKIPS.some((s) => s.readme === block.readme && block.code.includes(s.marker))) continue;
    const preamble = README_PREAMBLES.find((p) => p.readme === block.readme && block.code.includes(p.marker))?.preamble ?? '';
    const head = preamble ? `${preamble}\n` : '';
    // `export {}`: a module even when the fragment has no import, so blocks never share globals.
    const name = `${block.readme === 'README.md' ? 'client-readme' : 'root-readme'}-L${block.line}.${block.lang}`;
    writeFileSync(join(dir, name), `${head}${block.code}\nexport {};\n`);
    files.push(name);
    origin.set(name, { block, offset: head ? head.split('\n').length - 1 : 0 });
  }
  const report = (output: string) =>
    output.replace(/^([\w.-]+)\((\d+),(\d+)\)/gm, (all, file: string, line: string, col: string) => {
      const o = origin.get(file);
      if (!o) return all;
      const l = Number(line) - o.offset;
      return l >= 1 ? `${where(o.block.readme)}:${o.block.line + l - 1}:${col}` : `${all} (preamble of ${where(o.block.readme)}:${o.block.line})`;
    });
  return { files, report };
}
