// @ts-check
/**
 * Mutation testing (`npm run test:mutation`, docs/testing.md): StrykerJS puts every mutant of the four
 * folders below into src/ at once and switches one on per test run; a mutant that no test notices
 * "survives". The score counts the tests in vitest.mutation.config.ts (unit tests and the in-process
 * integration tests; the spawned binary never sees a mutant).
 * @type {import('@stryker-mutator/api/core').PartialStrykerOptions}
 */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.mutation.config.ts' },
  mutate: ['src/lease/**/*.ts', 'src/worker/**/*.ts', 'src/job/**/*.ts', 'src/api/**/*.ts'],
  coverageAnalysis: 'perTest',
  // Two cores, shared: two test processes at most. Run it under `nice` when other work is going on.
  concurrency: 2,
  thresholds: { high: 90, low: 85, break: 85 },
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/index.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  // Later runs redo only the mutants whose code or covering tests changed.
  incremental: true,
  incrementalFile: 'reports/stryker-incremental.json',
  tempDirName: '.stryker-tmp',
  // Other runs' sandboxes (a scoped run next to another uses `--tempDirName .stryker-tmp-<scope>`).
  ignorePatterns: ['/.stryker-tmp*'],
  cleanTempDir: 'always',
};
