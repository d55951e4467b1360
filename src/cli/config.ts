import { formatProblems, loadConfig, redactConfig } from '../config/index.js';
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
  io.stdout.write(`${JSON.stringify(redactConfig(result.config), null, 2)}\n`);
  return 0;
}
