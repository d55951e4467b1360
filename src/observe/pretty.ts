/**
 * The `pretty` log format: one human-readable line per event, rendered from pino's JSON line, no
 * extra dependency (pino-pretty costs a worker thread). For people at a terminal, e.g. the demo:
 *
 *   14:03:07.215 INFO   heartbeat  work_id=work_1 lease_left_ms=9870 request_id=req_3
 *   14:03:09.002 WARN   heartbeat_failed  work_id=work_1 err="socket hang up" err.kind=transient
 */

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const MAX_VALUE = 80;
const ERR_DETAILS = ['kind', 'status', 'code', 'requestId'] as const;

/** Renders one pino JSON line (with or without its newline); a line that is not JSON comes back unchanged. */
export function renderPrettyLine(jsonLine: string, skipKeys: ReadonlySet<string> = new Set()): string {
  let obj: unknown;
  try {
    obj = JSON.parse(jsonLine);
  } catch {
    return jsonLine;
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return jsonLine;
  const rec = obj as Record<string, unknown>;
  const level = typeof rec.level === 'number' ? (LEVEL_NAMES[rec.level] ?? String(rec.level)) : String(rec.level ?? '');
  const parts = [`${clock(rec.time)} ${level.padEnd(5)}  ${typeof rec.msg === 'string' ? rec.msg : ''}`];
  const fields: string[] = [];
  for (const [key, value] of Object.entries(rec)) {
    if (key === 'level' || key === 'time' || key === 'msg' || skipKeys.has(key) || value === undefined) continue;
    if (key === 'err' && value !== null && typeof value === 'object') {
      fields.push(...errorFields(value as Record<string, unknown>));
      continue;
    }
    fields.push(`${key}=${short(value)}`);
  }
  if (fields.length > 0) parts.push(fields.join(' '));
  return `${parts.join('  ')}\n`;
}

function errorFields(err: Record<string, unknown>): string[] {
  const out = [`err=${short(typeof err.message === 'string' && err.message !== '' ? err.message : (err.type ?? 'error'))}`];
  for (const k of ERR_DETAILS) if (err[k] !== undefined && err[k] !== null) out.push(`err.${k}=${short(err[k])}`);
  return out;
}

/** Local wall-clock time HH:MM:SS.mmm of an ISO timestamp (or of now). */
function clock(time: unknown): string {
  const d = typeof time === 'string' || typeof time === 'number' ? new Date(time) : new Date();
  const t = Number.isNaN(d.getTime()) ? new Date() : d;
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(t.getHours())}:${p(t.getMinutes())}:${p(t.getSeconds())}.${p(t.getMilliseconds(), 3)}`;
}

function short(value: unknown): string {
  if (typeof value === 'string') {
    if (value !== '' && value.length <= MAX_VALUE && /^[^\s"'=\\\x00-\x1f\x7f]+$/.test(value)) return value;
    return JSON.stringify(cut(value));
  }
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  return cut(JSON.stringify(value) ?? String(value));
}

function cut(s: string): string {
  return s.length > MAX_VALUE ? `${s.slice(0, MAX_VALUE - 1)}…` : s;
}
