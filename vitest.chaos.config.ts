import { defineConfig } from 'vitest/config';

/**
 * `npm run test:chaos`: the chaos suite alone (test/chaos is excluded from the default config). One
 * file; its scenarios run concurrently, CHAOS_CONCURRENCY (default 8) at a time, each with its own
 * emulator and keeper processes.
 */
export default defineConfig({
  test: {
    include: ['test/chaos/**/*.test.ts'],
    exclude: ['dist/**', 'node_modules/**'],
    // The same teardown as the main suite: no keeper or job outlives the run, nothing left in its TMPDIR.
    globalSetup: ['test/support/global-setup.ts'],
    maxConcurrency: Number(process.env.CHAOS_CONCURRENCY ?? 8),
    testTimeout: 120_000,
    hookTimeout: 60_000,
    maxWorkers: 1,
  },
});
