import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { addConfigOptions } from '../config/index.js';
import { processIO, type CliIO } from './io.js';

// Commands load lazily: `run` starts faster and never loads the emulator.

/** Parses argv and runs one command; resolves to the process exit code. */
export async function main(argv: string[], io: CliIO = processIO()): Promise<number> {
  let result: Promise<number> = Promise.resolve(0);
  const program = new Command('lease-keeper')
    .description('Holds the lease of Qoder self-hosted work items while your job runs, and stops the job when the lease is gone.')
    .version(packageVersion(), '-V, --version')
    .enablePositionalOptions() // so that `run -- <command> --flag` leaves the job's flags alone
    .showHelpAfterError()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .exitOverride();

  addConfigOptions(
    program
      .command('run')
      .description('the daemon: poll, ack, take the lease, run the job, report, repeat')
      .usage('[options] -- <command> [args...]')
      .argument('[command...]', 'the job command and its arguments (after --)')
      .passThroughOptions(),
  ).action((command: string[], flags: Record<string, unknown>) => {
    result = import('./run.js').then((m) => m.runCommand(flags, command, io));
  });

  addConfigOptions(
    program.command('config').description('print the resolved configuration (token redacted); exit 78 listing every problem'),
  ).action((flags: Record<string, unknown>) => {
    result = import('./config.js').then((m) => m.configCommand(flags, io));
  });

  program
    .command('emulator')
    .description('a local control plane with the same API, plus an admin API (queue, stop, takeover, faults)')
    .option('--host <host>', 'listen address', '127.0.0.1')
    .option('--port <port>', 'listen port (0 picks a free one)', '8787')
    .option('--token <token>', 'bearer token clients must send (default: $QODER_PAT, else "pt-emulator")')
    .option('--environment-id <id>', 'the one environment it serves', 'env_emulator')
    .option('--ttl-override <seconds>', 'grant this ttl to every heartbeat instead of clamping to 10..600 (fast tests)')
    .action((flags: Record<string, unknown>) => {
      result = import('./emulator.js').then((m) => m.emulatorCommand(flags, io));
    });

  program
    .command('demo')
    .description('runs the emulator in-process and narrates a keeper through claim, heartbeats, a server stop and a lost lease')
    .option('--format <format>', 'pretty (default on a TTY) or json')
    .action((flags: Record<string, unknown>) => {
      result = import('./demo.js').then((m) => m.demoCommand(flags, io));
    });

  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit 0; usage errors are configuration errors.
      return err.exitCode === 0 ? 0 : 78;
    }
    throw err;
  }
  return result;
}

/** The version of the installed package (dist/cli/main.js → ../../package.json). */
function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}
