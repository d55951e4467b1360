import type { Writable } from 'node:stream';
import { pino } from 'pino';
import type { LogLevel } from '../config/types.js';
import { MIN_SECRET_LENGTH, REDACTED, makeScrubber } from '../redact.js';
import { renderPrettyLine } from './pretty.js';

export { MIN_SECRET_LENGTH, makeScrubber };

/** The logger every module uses: a pino Logger. Log events, not prose: `log.info({ work_id }, 'heartbeat')`. */
export type Logger = pino.Logger;

export interface LoggerOptions {
  level: LogLevel;
  /** `json`: one pino JSON line per event. `pretty`: one human-readable line per event. */
  format: 'json' | 'pretty';
  /** Where lines go; default stdout, written synchronously. */
  destination?: Writable;
  /** Prefix each line with its syslog priority `<N>`; default: JOURNAL_STREAM is set (stdout is journald). */
  journal?: boolean;
  /**
   * Strings that must never be printed (the token): scrubbed from every line, wherever they are. The array may
   * grow while the logger lives (token rotation adds the new token): the scrubber follows it.
   */
  secrets?: readonly string[];
  /** Fields on every line. pid and hostname are left out: journald records them anyway. */
  base?: Record<string, unknown>;
}

/** Field paths whose values pino replaces with "[REDACTED]" before serializing. */
export const REDACT_PATHS = [
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'Authorization',
  '*.Authorization',
  'headers.authorization',
  'headers.Authorization',
  'config.token',
];

/** Secrets shorter than this are not scrubbed: replacing them would corrupt the JSON and hide nothing. */


/** syslog priority per pino level (sd-daemon(3) `<N>` prefix): fatal 2 (crit), error 3, warn 4, info 6, debug/trace 7. */
export function syslogPriority(level: number): number {
  if (level >= 60) return 2;
  if (level >= 50) return 3;
  if (level >= 40) return 4;
  if (level >= 30) return 6;
  return 7;
}

/**
 * Errors under `err`: the fields the keeper's errors carry (ApiError's kind/status/requestId, errno's
 * code), chosen one by one rather than every enumerable property, so that an error dragging a
 * request's headers along does not print them.
 */
export function serializeError(err: unknown, depth = 0): Record<string, unknown> {
  if (!(err instanceof Error)) {
    return { type: err === null ? 'null' : typeof err, message: String(err) };
  }
  const e = err as Error & Record<string, unknown>;
  const ctor = e.constructor?.name;
  const out: Record<string, unknown> = {
    type: ctor && ctor !== 'Error' ? ctor : e.name,
    message: e.message,
    stack: e.stack,
  };
  for (const k of ['code', 'kind', 'status', 'requestId', 'operation', 'errorType', 'retryAfterMs', 'signal', 'exitCode']) {
    const v = e[k];
    if (v !== undefined && v !== null && typeof v !== 'object' && typeof v !== 'function') out[k] = v;
  }
  if (e.cause !== undefined && depth < 3) out.cause = serializeError(e.cause, depth + 1);
  return out;
}

/**
 * A pino logger: JSON lines with an ISO `time` and `msg` = the event name, errors under `err`.
 *
 * Token safety in depth. redact only covers known field paths; pino's own tests here (ecosystem.md §4)
 * leaked a token through err.message, the stack and an interpolated msg. So the final line is also
 * scrubbed of every secret, in hooks.streamWrite, after serialization and before the destination:
 * whatever a caller passes, the text that leaves the process has no token in it.
 */
export function createLogger(opts: LoggerOptions): Logger {
  const secrets = opts.secrets ?? [];
  let scrubber = makeScrubber(secrets);
  let scrubbedCount = secrets.length;
  const scrub = (text: string): string => {
    if (secrets.length !== scrubbedCount) {
      scrubber = makeScrubber(secrets);
      scrubbedCount = secrets.length;
    }
    return scrubber(text);
  };
  const journal = opts.journal ?? Boolean(process.env.JOURNAL_STREAM);
  const baseKeys = new Set(Object.keys(opts.base ?? {}));
  const pretty = opts.format === 'pretty';

  const streamWrite = (line: string): string => {
    const clean = scrub(line);
    let out = pretty ? scrub(renderPrettyLine(clean, baseKeys)) : clean;
    if (journal) {
      // pino writes `{"level":N,` first; under journald the `<P>` prefix sets PRIORITY= and is stripped.
      const m = /"level":(\d+)/.exec(line);
      out = `<${syslogPriority(m ? Number(m[1]) : 30)}>${out}`;
    }
    return out;
  };

  const destination = opts.destination ?? pino.destination({ dest: 1, sync: true });
  return pino(
    {
      level: opts.level,
      base: opts.base ?? null,
      timestamp: pino.stdTimeFunctions.isoTime,
      messageKey: 'msg',
      errorKey: 'err',
      redact: { paths: REDACT_PATHS, censor: REDACTED },
      serializers: { err: serializeError },
      hooks: { streamWrite },
    },
    destination,
  );
}
