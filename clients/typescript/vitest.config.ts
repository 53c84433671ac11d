import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'], environment: 'node' } },
      { test: { name: 'hooks', include: ['test/hooks/**/*.test.tsx', 'test/hooks/**/*.test.ts'], environment: 'jsdom' } },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          environment: 'node',
          testTimeout: 120_000,
          hookTimeout: 300_000,
        },
      },
      {
        // pgbroadcast-codegen: unit tests, regeneration of demo/src/sync, strict tsc of generated code.
        test: { name: 'codegen', include: ['test/codegen/**/*.test.ts'], environment: 'node', testTimeout: 120_000 },
      },
      {
        // Packs the package (`npm pack` runs `prepack` = build) and checks the
        // tarball from throwaway consumer projects: CJS/ESM entries, types.
        test: {
          name: 'package',
          include: ['test/package/**/*.test.ts'],
          environment: 'node',
          testTimeout: 90_000,
          hookTimeout: 180_000,
        },
      },
      {
        // The demo's browser app (`pgbroadcast demo`) in Chromium via
        // playwright-core (/usr/bin/chromium or $CHROMIUM_PATH; no browser
        // download), and the committed bundle being what a build gives.
        test: {
          name: 'browser',
          include: ['test/browser/**/*.test.ts'],
          environment: 'node',
          testTimeout: 120_000,
          hookTimeout: 300_000,
        },
      },
    ],
  },
});
