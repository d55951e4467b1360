import { formatProblems, loadConfig, redactConfig } from '../config/index.js';
import { planContainment } from '../job/index.js';
import type { CliIO } from './io.js';

/** Exit code of bad configuration (EX_CONFIG), spec §6. */
export const EXIT_CONFIG = 78;

/**
 * `lease-keeper config`: prints the resolved configuration as JSON with the token redacted (exit 0),
 * or every problem on stderr (exit 78). Reads only the environment, flags and token/machine-id files;
 * sends nothing anywhere.
 */
export async function configCommand(flags: Record<string, unknown>, io: CliIO): Promise<number> {
  const result = loadConfig({ env: io.env, flags, requireCommand: false });
  if (!result.ok) {
    io.stderr.write(`${formatProblems(result.problems)}\n`);
    return EXIT_CONFIG;
  }
  const config = result.config;
  // What `run` would use here, decided without creating anything.
  const planned = planContainment({ mode: config.containment, workerId: config.workerId, limits: config.jobLimits, oomScoreAdj: config.jobOomScoreAdj });
  if (planned.kind === null) {
    io.stderr.write(`${formatProblems(planned.problems)}\n`);
    return EXIT_CONFIG;
  }
  const shown = { ...redactConfig(config), containmentActive: planned.kind, containmentReason: planned.reason };
  io.stdout.write(`${JSON.stringify(shown, null, 2)}\n`);
  return 0;
}
