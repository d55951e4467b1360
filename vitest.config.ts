import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['dist/**', 'node_modules/**', 'test/chaos/**', 'test/system/**'],
    // Fails the run when a process of the suite outlives it or something is left in its temporary directory.
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests spawn real keepers and jobs; two cores, so keep the pool small.
    maxWorkers: 2,
  },
});
