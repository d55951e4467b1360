import { defineConfig } from 'vitest/config';

/**
 * `npm run test:system`: the units under a real systemd booted in a throwaway sandbox (test/system, root only;
 * excluded from the default config). One file, its tests one after another, each with its own sandbox.
 */
export default defineConfig({
  test: {
    include: ['test/system/**/*.test.ts'],
    exclude: ['dist/**', 'node_modules/**'],
    // The suite's own leftover check (processes, its temporary directory) on top of each file's sandbox check.
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 90_000,
    hookTimeout: 60_000,
    maxWorkers: 1,
  },
});
