/**
 * Compiler options of an app that consumes this package, for the tests that
 * type-check such apps (package, peer sets, codegen): strict,
 * `skipLibCheck: false`, bundler resolution, React's JSX.
 *
 * Not a test file itself (vitest runs `*.test.ts` only).
 */
export const APP_COMPILER_OPTIONS = {
  target: 'ES2022',
  lib: ['ES2022', 'DOM', 'DOM.Iterable'],
  module: 'ESNext',
  moduleResolution: 'Bundler',
  jsx: 'react-jsx',
  strict: true,
  skipLibCheck: false,
  noEmit: true,
  types: [],
};

/** For code `pgbroadcast-codegen` writes: as an app's, and it must leave nothing unused and compile file by file. */
export const GENERATED_CODE_COMPILER_OPTIONS = {
  ...APP_COMPILER_OPTIONS,
  noUnusedLocals: true,
  noUnusedParameters: true,
  isolatedModules: true,
  verbatimModuleSyntax: true,
};
