import { ENV_ID_RE } from '../api/parse.js';
import { isIPv4, isIPv6 } from 'node:net';
import type { JobOutputSetting, LogLevel, OnShutdown, ShutdownMode } from './types.js';

/**
 * Pure parsers, one per kind of value. Each takes the raw text (already known to be non-empty) and
 * returns the value, or the rule it breaks. `shown` replaces the raw text in the problem when the raw
 * text must not be echoed as is (a URL with a password in it).
 */
export type Parsed<T> = { ok: true; value: T } | { ok: false; rule: string; shown?: string };

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const bad = <T>(rule: string, shown?: string): Parsed<T> => (shown === undefined ? { ok: false, rule } : { ok: false, rule, shown });

const INTEGER = /^[+-]?\d+$/;
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** An integer in [min, max]; no hex, no exponent, no fraction. */
export function parseInteger(raw: string, min: number, max: number): Parsed<number> {
  const rule = `must be an integer from ${min} to ${max}`;
  const text = raw.trim();
  if (!INTEGER.test(text)) return bad(rule);
  const n = Number(text);
  return Number.isSafeInteger(n) && n >= min && n <= max ? ok(n) : bad(rule);
}

/** A finite decimal number in [min, max]. */
export function parseNumber(raw: string, min: number, max: number): Parsed<number> {
  const rule = `must be a number from ${min} to ${max}`;
  const text = raw.trim();
  if (!DECIMAL.test(text)) return bad(rule);
  const n = Number(text);
  return Number.isFinite(n) && n >= min && n <= max ? ok(n) : bad(rule);
}

const TRUE = ['true', '1', 'yes'];
const FALSE = ['false', '0', 'no'];

/** true/false/1/0/yes/no, case-insensitive. */
export function parseBoolean(raw: string): Parsed<boolean> {
  const text = raw.trim().toLowerCase();
  if (TRUE.includes(text)) return ok(true);
  if (FALSE.includes(text)) return ok(false);
  return bad('must be one of: true, false, 1, 0, yes, no');
}

/** One of `allowed`, case-insensitive; returns the allowed spelling. */
export function parseEnum<T extends string>(raw: string, allowed: readonly T[]): Parsed<T> {
  const text = raw.trim().toLowerCase();
  const found = allowed.find((a) => a.toLowerCase() === text);
  return found === undefined ? bad(`must be one of: ${allowed.join(', ')}`) : ok(found);
}

export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
export const LOG_FORMATS = ['json', 'pretty'] as const;
export const ON_SHUTDOWN: readonly OnShutdown[] = ['stop', 'release'];
export const CONTAINMENT_MODES = ['auto', 'cgroup', 'process-group'] as const;
export const JOB_OUTPUTS: readonly JobOutputSetting[] = ['auto', 'inherit', 'prefix', 'journal'];
export const SHUTDOWN_MODES: readonly ShutdownMode[] = ['drain', 'finish'];
export const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGKILL'] as const;

/** `TERM`, `sigterm`, `SIGTERM`… → `SIGTERM`, among STOP_SIGNALS. */
export function parseSignal(raw: string): Parsed<NodeJS.Signals> {
  let text = raw.trim().toUpperCase();
  if (!text.startsWith('SIG')) text = `SIG${text}`;
  const found = STOP_SIGNALS.find((s) => s === text);
  return found === undefined ? bad(`must be one of: ${STOP_SIGNALS.join(', ')} (the SIG prefix is optional)`) : ok(found);
}


export function parseEnvironmentId(raw: string): Parsed<string> {
  const text = raw.trim();
  return ENV_ID_RE.test(text) ? ok(text) : bad('must be env_ followed by 1 to 128 of [A-Za-z0-9_-]');
}

const WORKER_ID = /^[A-Za-z0-9._:@-]{1,128}$/;
export const WORKER_ID_RULE = 'must be 1 to 128 of [A-Za-z0-9._:@-]';

export function parseWorkerId(raw: string): Parsed<string> {
  const text = raw.trim();
  return WORKER_ID.test(text) ? ok(text) : bad(WORKER_ID_RULE);
}

/**
 * The default worker id: `<hostname>-<first 12 chars of the machine id>`, or the host name alone.
 * Characters outside the allowed set become `-`, so that the default is always valid.
 */
export function defaultWorkerId(hostname: string, machineId: string | null): string {
  const clean = (s: string) => s.replace(/[^A-Za-z0-9._:@-]/g, '-');
  const host = clean(hostname.trim()) || 'lease-keeper';
  const mid = machineId === null ? '' : clean(machineId.trim().slice(0, 12));
  const id = mid === '' ? host : `${host.slice(0, 128 - 13)}-${mid}`;
  return id.slice(0, 128);
}

export const API_URL_RULE =
  'must be an https:// origin such as https://api.qoder.com (a trailing / or /api/v1/cloud is accepted), ' +
  'without other path, query or credentials; http:// only for loopback hosts (127.0.0.0/8, ::1, localhost)';

/** True for localhost, 127.0.0.0/8 and ::1 (as URL.hostname spells them). */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase();
  if (host === 'localhost') return true;
  if (isIPv4(host)) return host.startsWith('127.');
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  return isIPv6(bare) && (bare === '::1' || bare === '0:0:0:0:0:0:0:1');
}

/** The gateway origin: `https://host[:port]`, a trailing `/` or `/api/v1/cloud` stripped. */
export function parseApiUrl(raw: string): Parsed<string> {
  const text = raw.trim();
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return bad(`is not a URL: ${API_URL_RULE}`);
  }
  if (url.username !== '' || url.password !== '') {
    // Never echo a password: show the URL with its user info masked.
    url.username = '';
    url.password = '';
    return bad(`must not contain credentials (use QODER_PAT or QODER_PAT_FILE): ${API_URL_RULE}`, url.href.replace('://', '://***@'));
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return bad(API_URL_RULE);
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    return bad(`http:// is only allowed for loopback hosts (127.0.0.0/8, ::1, localhost); use https://`);
  }
  if (url.search !== '' || url.hash !== '' || text.includes('?') || text.includes('#')) return bad(API_URL_RULE);
  const path = url.pathname.replace(/\/+$/, '');
  if (path !== '' && path !== '/api/v1/cloud') return bad(API_URL_RULE);
  return ok(url.origin);
}

const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$/;
export const STATUS_ADDR_RULE = 'must be host:port with a port from 0 to 65535, e.g. 127.0.0.1:9100 (IPv6 as [::1]:9100)';

/** `host:port` or `[v6]:port`; the host comes back without brackets, ready for server.listen(). */
export function parseStatusAddr(raw: string): Parsed<{ host: string; port: number }> {
  const text = raw.trim();
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]+):(\d{1,5})$/.exec(text);
  if (m === null) return bad(STATUS_ADDR_RULE);
  const host = m[1] ?? '';
  const port = Number(m[2]);
  const bracketed = text.startsWith('[');
  const hostOk = bracketed ? isIPv6(host) : isIPv4(host) || HOSTNAME.test(host);
  if (!hostOk || !Number.isInteger(port) || port > 65535) return bad(STATUS_ADDR_RULE);
  return ok({ host, port });
}

const BYTES = /^(\d+)\s*([KMGT]?)$/i;
const UNIT: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** A size like systemd's MemoryMax=: bytes, or K/M/G/T (powers of 1024). At least 1M: less cannot run a job. */
export function parseBytes(raw: string): Parsed<number> {
  const rule = 'must be a size like 512M, 2G or 1073741824 (bytes; K, M, G, T are powers of 1024), at least 1M';
  const m = BYTES.exec(raw.trim());
  if (m === null) return bad(rule);
  const n = Number(m[1]) * UNIT[m[2]!.toUpperCase()]!;
  return Number.isSafeInteger(n) && n >= 1024 ** 2 ? ok(n) : bad(rule);
}

/** A CPU quota like systemd's CPUQuota=: `200%` is two CPUs. Returns the number of CPUs (2). */
export function parseCpuQuota(raw: string): Parsed<number> {
  const rule = 'must be a percentage of one CPU like 50% or 200%, from 1% to 100000%';
  const m = /^(\d+(?:\.\d+)?)%$/.exec(raw.trim());
  if (m === null) return bad(rule);
  const percent = Number(m[1]);
  return percent >= 1 && percent <= 100000 ? ok(percent / 100) : bad(rule);
}
