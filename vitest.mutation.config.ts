import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

/**
 * The tests StrykerJS runs against each mutant (`npm run test:mutation`, docs/testing.md): every unit
 * test and the integration tests that drive src/ in the test's own process (the client and the emulator
 * over loopback). Left out: the tests that run the built binary (cli, keeper, systemd). The vitest runner
 * activates a mutant inside the test worker only, so a spawned `bin/lease-keeper` never sees it; measured:
 * every mutant survived them, and they cost ~30 s per run.
 */
export default defineConfig({
  ...base,
  test: {
    ...base.test,
    // Replaces the base list (mergeConfig would append to it).
    include: ['test/unit/**/*.test.ts', 'test/integration/api-emulator.test.ts', 'test/integration/emulator-*.test.ts'],
  },
});
