/**
 * Reply validation at the edge: a 2xx body becomes a typed value only when every field we rely on is
 * present and well-formed. Nothing here throws anything but `ReplyShapeError`, which the client turns
 * into a MalformedReplyError naming the field. Pure: no I/O, no clock.
 *
 * Strict where a value is used for a decision or reaches a URL path or a header (ids, state, ttl,
 * last_heartbeat); lenient where it is informational (the item's own timestamps are any non-empty
 * string, unknown extra fields and unknown `data.type` values are kept as they are).
 */
import { WORK_STATES, type WorkHeartbeat, type WorkItem, type WorkQueueStats, type WorkState } from './types.js';

/** `work_` ids: the only shape that may be placed in a URL path. */
export const WORK_ID_RE = /^work_[A-Za-z0-9_-]{1,128}$/;
/** `env_` ids. */
export const ENV_ID_RE = /^env_[A-Za-z0-9_-]{1,128}$/;

/**
 * RFC 3339 `date-time` (section 5.6): `T`/`t` separator, optional fraction of 1 to 9 digits,
 * `Z`/`z` or a numeric offset. Ranges are checked separately in `isRfc3339`.
 */
const RFC3339_RE = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/;

/** A reply field that is missing, mistyped or out of range. `field` is a dotted path such as `data.id`. */
export class ReplyShapeError extends Error {
  override readonly name = 'ReplyShapeError';
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`field ${field} ${problem}`);
  }
}

function fail(field: string, problem: string): never {
  throw new ReplyShapeError(field, problem);
}

/** Describes a JSON value for an error message without echoing it (it may be huge or hostile). */
export function describeJson(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

/** True for any valid RFC 3339 date-time string (leap second 60 allowed, as the RFC does). */
export function isRfc3339(value: string): boolean {
  const m = RFC3339_RE.exec(value);
  if (!m) return false;
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  const hour = Number(m[4]);
  const minute = Number(m[5]);
  const second = Number(m[6]);
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return false;
  if (hour > 23 || minute > 59 || second > 60) return false;
  if (m[8] !== undefined && (Number(m[9]) > 23 || Number(m[10]) > 59)) return false;
  return true;
}

function objectField(obj: Record<string, unknown>, key: string, path: string): Record<string, unknown> {
  const v = obj[key];
  if (!isPlainObject(v)) fail(path, v === undefined ? 'is missing' : `must be an object, got ${describeJson(v)}`);
  return v;
}

function stringField(obj: Record<string, unknown>, key: string, path: string): string {
  const v = obj[key];
  if (typeof v !== 'string') fail(path, v === undefined ? 'is missing' : `must be a string, got ${describeJson(v)}`);
  if (v.length === 0) fail(path, 'must not be empty');
  return v;
}

function nullableStringField(obj: Record<string, unknown>, key: string, path: string): string | null {
  const v = obj[key];
  if (v === null) return null;
  if (v === undefined) fail(path, 'is missing (expected a string or null)');
  return stringField(obj, key, path);
}

function literalField(obj: Record<string, unknown>, key: string, expected: string): void {
  const v = obj[key];
  if (v !== expected) fail(key, `must be "${expected}", got ${typeof v === 'string' ? JSON.stringify(v.slice(0, 40)) : describeJson(v)}`);
}

function idField(obj: Record<string, unknown>, key: string, re: RegExp, prefix: string): string {
  const v = stringField(obj, key, key);
  if (!re.test(v)) fail(key, `must be ${prefix} followed by 1 to 128 of [A-Za-z0-9_-]`);
  return v;
}

function stateField(obj: Record<string, unknown>, key: string): WorkState {
  const v = stringField(obj, key, key);
  if (!(WORK_STATES as readonly string[]).includes(v)) fail(key, `is not a known state (expected one of ${WORK_STATES.join(', ')})`);
  return v as WorkState;
}

function countField(obj: Record<string, unknown>, key: string): number {
  const v = obj[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    fail(key, v === undefined ? 'is missing' : 'must be a non-negative integer');
  }
  return v;
}

// Control characters (C0, DEL, C1): never allowed in a value we pass on to a child's environment.
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;

/** A work item (`type: "work"`). Returns the parsed object itself, unknown extra fields included. */
export function parseWorkItem(value: unknown): WorkItem {
  if (!isPlainObject(value)) fail('(body)', `must be a work item object, got ${describeJson(value)}`);
  literalField(value, 'type', 'work');
  idField(value, 'id', WORK_ID_RE, 'work_');
  idField(value, 'environment_id', ENV_ID_RE, 'env_');
  const data = objectField(value, 'data', 'data');
  stringField(data, 'type', 'data.type');
  const dataId = stringField(data, 'id', 'data.id');
  if (dataId.length > 256 || CONTROL_RE.test(dataId)) fail('data.id', 'must be at most 256 characters without control characters');
  stateField(value, 'state');
  stringField(value, 'created_at', 'created_at');
  for (const key of ['acknowledged_at', 'started_at', 'latest_heartbeat_at', 'stop_requested_at', 'stopped_at']) {
    nullableStringField(value, key, key);
  }
  const metadata = objectField(value, 'metadata', 'metadata');
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') fail(`metadata[${JSON.stringify(k.slice(0, 64))}]`, `must be a string, got ${describeJson(v)}`);
  }
  return value as unknown as WorkItem;
}

/** Poll's reply: JSON `null` (no work) or a work item. */
export function parseWorkItemOrNull(value: unknown): WorkItem | null {
  return value === null ? null : parseWorkItem(value);
}

/** A heartbeat reply (`type: "work_heartbeat"`). `last_heartbeat` is kept as the exact string received. */
export function parseHeartbeat(value: unknown): WorkHeartbeat {
  if (!isPlainObject(value)) fail('(body)', `must be a work_heartbeat object, got ${describeJson(value)}`);
  literalField(value, 'type', 'work_heartbeat');
  const last = stringField(value, 'last_heartbeat', 'last_heartbeat');
  if (!isRfc3339(last)) fail('last_heartbeat', 'must be an RFC 3339 timestamp');
  if (typeof value.lease_extended !== 'boolean') {
    fail('lease_extended', value.lease_extended === undefined ? 'is missing' : `must be a boolean, got ${describeJson(value.lease_extended)}`);
  }
  stateField(value, 'state');
  const ttl = value.ttl_seconds;
  if (typeof ttl !== 'number' || !Number.isSafeInteger(ttl) || ttl <= 0) {
    fail('ttl_seconds', ttl === undefined ? 'is missing' : 'must be a positive integer');
  }
  return value as unknown as WorkHeartbeat;
}

/** Queue stats (`type: "work_queue_stats"`). */
export function parseStats(value: unknown): WorkQueueStats {
  if (!isPlainObject(value)) fail('(body)', `must be a work_queue_stats object, got ${describeJson(value)}`);
  literalField(value, 'type', 'work_queue_stats');
  countField(value, 'depth');
  countField(value, 'pending');
  countField(value, 'workers_polling');
  nullableStringField(value, 'oldest_queued_at', 'oldest_queued_at');
  return value as unknown as WorkQueueStats;
}

/** The error envelope `{type:"error", request_id, error:{type, message}}`, read leniently: any part may be absent. */
export interface ErrorEnvelope {
  errorType?: string;
  message?: string;
  requestId?: string;
}

export function parseErrorEnvelope(value: unknown): ErrorEnvelope {
  const out: ErrorEnvelope = {};
  if (!isPlainObject(value)) return out;
  if (typeof value.request_id === 'string') out.requestId = value.request_id;
  const err = value.error;
  if (isPlainObject(err)) {
    if (typeof err.type === 'string') out.errorType = err.type;
    if (typeof err.message === 'string') out.message = err.message;
  } else if (typeof err === 'string') {
    out.message = err;
  }
  if (out.message === undefined && typeof value.message === 'string') out.message = value.message;
  return out;
}
