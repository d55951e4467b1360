import { ENV_ID_RE } from '../api/parse.js';
import { startEmulator } from '../emulator/index.js';
import type { CliIO } from './io.js';

export const DEFAULT_EMULATOR_TOKEN = 'pt-emulator';
const EX_CONFIG = 78;

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/**
 * `lease-keeper emulator`: serves the work API and the admin API until SIGINT/SIGTERM (or `stop` aborts).
 * Prints one JSON line on stdout once listening; the event log goes to stderr as JSON lines (without
 * `poll_empty`, which would arrive every second per worker). Resolves 0 after a clean close, 78 on bad
 * flags, 1 when it cannot listen.
 */
export async function emulatorCommand(flags: Record<string, unknown>, io: CliIO, stop?: AbortSignal): Promise<number> {
  const fail = (msg: string, code = EX_CONFIG): number => {
    io.stderr.write(`lease-keeper emulator: ${msg}\n`);
    return code;
  };
  const host = str(flags.host) ?? '127.0.0.1';
  const portRaw = str(flags.port) ?? '8787';
  if (!/^\d{1,5}$/.test(portRaw) || Number(portRaw) > 65535) return fail(`--port must be an integer 0..65535 (got "${portRaw}")`);
  const ttlRaw = str(flags.ttlOverride);
  if (ttlRaw !== undefined && (!/^\d{1,3}$/.test(ttlRaw) || Number(ttlRaw) < 1 || Number(ttlRaw) > 600)) {
    return fail(`--ttl-override must be an integer 1..600 seconds (got "${ttlRaw}")`);
  }
  const environmentId = str(flags.environmentId) ?? 'env_emulator';
  if (!ENV_ID_RE.test(environmentId)) return fail('--environment-id must be env_ followed by [A-Za-z0-9_-]');
  const token = str(flags.token) ?? str(io.env.QODER_PAT) ?? DEFAULT_EMULATOR_TOKEN;
  if (/\s/.test(token)) return fail('the token must not contain whitespace');

  let emulator;
  try {
    emulator = await startEmulator({
      host,
      port: Number(portRaw),
      token,
      environmentId,
      ttlOverrideSeconds: ttlRaw === undefined ? null : Number(ttlRaw),
      log: (line, event) => {
        if (event.type !== 'poll_empty') io.stderr.write(`${line}\n`);
      },
    });
  } catch (err) {
    return fail(`cannot listen on ${host}:${portRaw}: ${(err as Error).message}`, 1);
  }

  io.stdout.write(
    `${JSON.stringify({
      event: 'emulator_listening',
      url: emulator.url,
      environment_id: emulator.environmentId,
      admin: emulator.adminUrl,
      ...(token === DEFAULT_EMULATOR_TOKEN ? { token } : {}),
    })}\n`,
  );

  await new Promise<void>((resolve) => {
    const done = () => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      stop?.removeEventListener('abort', done);
      resolve();
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
    if (stop?.aborted) done();
    else stop?.addEventListener('abort', done, { once: true });
  });
  await emulator.close();
  return 0;
}
