/**
 * Reply validation, word for word: the client puts `its <message>` into the MalformedReplyError an
 * operator reads, so each rejection must name the field and say what was wrong with it (without echoing
 * a hostile value). Also the calendar edges of `isRfc3339` (a heartbeat's `last_heartbeat` is checked
 * with it) and the lenient reading of the error envelope, whose parts end up in every error message.
 */
import { describe, expect, it } from 'vitest';
import {
  ENV_ID_RE,
  ReplyShapeError,
  WORK_ID_RE,
  describeJson,
  isRfc3339,
  parseErrorEnvelope,
  parseHeartbeat,
  parseStats,
  parseWorkItem,
  parseWorkItemOrNull,
} from '../../src/api/parse.js';
import { wireBeat, wireItem } from '../support/wire.js';

/** The ReplyShapeError `fn` throws: its message, after checking field and problem add up to it. */
function rejection(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ReplyShapeError);
    const e = err as ReplyShapeError;
    expect(e.name).toBe('ReplyShapeError');
    expect(e.message).toBe(`field ${e.field} ${e.problem}`);
    return e.message;
  }
  throw new Error('expected a ReplyShapeError');
}

const stats = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  type: 'work_queue_stats',
  depth: 2,
  pending: 1,
  oldest_queued_at: null,
  workers_polling: 0,
  ...over,
});

describe('describeJson names the kind of a value, never the value', () => {
  it.each<[unknown, string]>([
    [null, 'null'],
    [[1, 2], 'an array'],
    [{ a: 1 }, 'an object'],
    [7, 'a number'],
    ['pt-secret', 'a string'],
    [true, 'a boolean'],
    [undefined, 'a undefined'],
  ])('%j → %s', (value, words) => expect(describeJson(value)).toBe(words));
});

describe('isRfc3339: the calendar and the clock', () => {
  it.each(['2000-02-29T00:00:00Z', '2024-02-29T00:00:00Z', '2026-01-31T00:00:00Z', '2026-07-31T00:00:00Z', '2026-04-30T00:00:00Z', '2026-12-01T00:00:00Z'])(
    'accepts %s',
    (s) => expect(isRfc3339(s)).toBe(true),
  );
  it.each(['1900-02-29T00:00:00Z', '2100-02-29T00:00:00Z', '2026-02-29T00:00:00Z', '2026-00-10T00:00:00Z', '2026-07-00T00:00:00Z', '2026-06-31T00:00:00Z'])(
    'rejects %s',
    (s) => expect(isRfc3339(s)).toBe(false),
  );
  it('takes offsets up to ±23:59 and no further', () => {
    expect(isRfc3339('2026-07-01T08:15:06+23:59')).toBe(true);
    expect(isRfc3339('2026-07-01T08:15:06-00:59')).toBe(true);
    expect(isRfc3339('2026-07-01T08:15:06+05:60')).toBe(false);
    expect(isRfc3339('2026-07-01T08:15:06-24:00')).toBe(false);
    expect(isRfc3339('2026-07-01T23:59:59Z')).toBe(true);
  });
});

describe('the id patterns are anchored at both ends', () => {
  it('work ids', () => {
    expect(WORK_ID_RE.test('work_a')).toBe(true);
    expect(WORK_ID_RE.test('xwork_a')).toBe(false);
    expect(WORK_ID_RE.test('../work_a')).toBe(false);
    expect(WORK_ID_RE.test('work_a/..')).toBe(false);
  });
  it('environment ids', () => {
    expect(ENV_ID_RE.test('env_a')).toBe(true);
    expect(ENV_ID_RE.test('my-env_a')).toBe(false);
    expect(ENV_ID_RE.test('env_a?x=1')).toBe(false);
  });
});

describe('a work item: what the operator reads for each bad field', () => {
  it.each<[string, unknown, string]>([
    ['an array body', [], 'field (body) must be a work item object, got an array'],
    ['a string body', 'work', 'field (body) must be a work item object, got a string'],
    ['another type', wireItem({ type: 'job' }), 'field type must be "work", got "job"'],
    ['a type cut to 40 characters', wireItem({ type: 'x'.repeat(60) }), `field type must be "work", got "${'x'.repeat(40)}"`],
    ['a type that is not a string', wireItem({ type: 3 }), 'field type must be "work", got a number'],
    ['no type', wireItem({ type: undefined }), 'field type must be "work", got a undefined'],
    ['a bad id', wireItem({ id: 'wrk_1' }), 'field id must be work_ followed by 1 to 128 of [A-Za-z0-9_-]'],
    ['no id', wireItem({ id: undefined }), 'field id is missing'],
    ['an id that is a number', wireItem({ id: 7 }), 'field id must be a string, got a number'],
    ['an empty id', wireItem({ id: '' }), 'field id must not be empty'],
    ['a bad environment id', wireItem({ environment_id: 'e1' }), 'field environment_id must be env_ followed by 1 to 128 of [A-Za-z0-9_-]'],
    ['no data', wireItem({ data: undefined }), 'field data is missing'],
    ['data as a string', wireItem({ data: 'x' }), 'field data must be an object, got a string'],
    ['data null', wireItem({ data: null }), 'field data must be an object, got null'],
    ['no data.type', wireItem({ data: { id: 's1' } }), 'field data.type is missing'],
    ['no data.id', wireItem({ data: { type: 'session' } }), 'field data.id is missing'],
    ['a control character in data.id', wireItem({ data: { type: 'session', id: 's\u00851' } }), 'field data.id must be at most 256 characters without control characters'],
    ['an unknown state', wireItem({ state: 'running' }), 'field state is not a known state (expected one of queued, starting, active, stopping, stopped)'],
    ['created_at empty', wireItem({ created_at: '' }), 'field created_at must not be empty'],
    ['a timestamp missing', wireItem({ started_at: undefined }), 'field started_at is missing (expected a string or null)'],
    ['a timestamp as a number', wireItem({ acknowledged_at: 5 }), 'field acknowledged_at must be a string, got a number'],
    ['metadata missing', wireItem({ metadata: undefined }), 'field metadata is missing'],
    ['a metadata value that is a number', wireItem({ metadata: { exit_code: 0 } }), 'field metadata["exit_code"] must be a string, got a number'],
    ['a long metadata key, cut to 64 characters', wireItem({ metadata: { ['k'.repeat(100)]: 1 } }), `field metadata[${JSON.stringify('k'.repeat(64))}] must be a string, got a number`],
  ])('%s', (_name, value, message) => expect(rejection(() => parseWorkItem(value))).toBe(message));

  it('data.id: 256 characters pass, 257 do not', () => {
    expect(parseWorkItem(wireItem({ data: { type: 'session', id: 's'.repeat(256) } })).data.id).toHaveLength(256);
    expect(rejection(() => parseWorkItem(wireItem({ data: { type: 'session', id: 's'.repeat(257) } })))).toBe(
      'field data.id must be at most 256 characters without control characters',
    );
  });

  it('a timestamp may be null; a poll reply of null is no work, anything else must be an item', () => {
    expect(parseWorkItem(wireItem({ stopped_at: null })).stopped_at).toBeNull();
    expect(parseWorkItemOrNull(null)).toBeNull();
    expect(rejection(() => parseWorkItemOrNull(0))).toBe('field (body) must be a work item object, got a number');
  });
});

describe('a heartbeat reply: what the operator reads for each bad field', () => {
  it.each<[string, unknown, string]>([
    ['null body', null, 'field (body) must be a work_heartbeat object, got null'],
    ['another type', wireBeat({ type: 'work' }), 'field type must be "work_heartbeat", got "work"'],
    ['no last_heartbeat', wireBeat({ last_heartbeat: undefined }), 'field last_heartbeat is missing'],
    ['last_heartbeat not a timestamp', wireBeat({ last_heartbeat: 'soon' }), 'field last_heartbeat must be an RFC 3339 timestamp'],
    ['lease_extended missing', wireBeat({ lease_extended: undefined }), 'field lease_extended is missing'],
    ['lease_extended a string', wireBeat({ lease_extended: 'true' }), 'field lease_extended must be a boolean, got a string'],
    ['lease_extended null', wireBeat({ lease_extended: null }), 'field lease_extended must be a boolean, got null'],
    ['ttl missing', wireBeat({ ttl_seconds: undefined }), 'field ttl_seconds is missing'],
    ['ttl zero', wireBeat({ ttl_seconds: 0 }), 'field ttl_seconds must be a positive integer'],
    ['ttl a fraction', wireBeat({ ttl_seconds: 2.5 }), 'field ttl_seconds must be a positive integer'],
    ['ttl a string', wireBeat({ ttl_seconds: '60' }), 'field ttl_seconds must be a positive integer'],
  ])('%s', (_name, value, message) => expect(rejection(() => parseHeartbeat(value))).toBe(message));

  it('lease_extended false and a ttl of 1 are valid', () => {
    expect(parseHeartbeat(wireBeat({ lease_extended: false, ttl_seconds: 1 }))).toMatchObject({ lease_extended: false, ttl_seconds: 1 });
  });
});

describe('queue stats: what the operator reads for each bad field', () => {
  it.each<[string, unknown, string]>([
    ['an array body', [], 'field (body) must be a work_queue_stats object, got an array'],
    ['another type', stats({ type: 'stats' }), 'field type must be "work_queue_stats", got "stats"'],
    ['depth missing', stats({ depth: undefined }), 'field depth is missing'],
    ['depth negative', stats({ depth: -1 }), 'field depth must be a non-negative integer'],
    ['pending a string', stats({ pending: '1' }), 'field pending must be a non-negative integer'],
    ['workers_polling a fraction', stats({ workers_polling: 0.5 }), 'field workers_polling must be a non-negative integer'],
    ['workers_polling too big to be exact', stats({ workers_polling: 2 ** 53 }), 'field workers_polling must be a non-negative integer'],
    ['oldest_queued_at missing', stats({ oldest_queued_at: undefined }), 'field oldest_queued_at is missing (expected a string or null)'],
  ])('%s', (_name, value, message) => expect(rejection(() => parseStats(value))).toBe(message));

  it('zero counts and a queued timestamp are valid', () => {
    const v = stats({ depth: 0, pending: 0, oldest_queued_at: '2026-07-01T08:15:06Z' });
    expect(parseStats(v)).toBe(v);
  });
});

describe('the error envelope, read leniently', () => {
  it('the documented shape', () => {
    expect(parseErrorEnvelope({ type: 'error', request_id: 'r1', error: { type: 'not_found_error', message: 'gone' } })).toEqual({
      requestId: 'r1',
      errorType: 'not_found_error',
      message: 'gone',
    });
  });
  it('parts of the wrong type are left out, not guessed', () => {
    expect(parseErrorEnvelope({ request_id: 5, error: { type: 1, message: null } })).toEqual({});
    expect(parseErrorEnvelope({ error: ['x'] })).toEqual({});
    expect(parseErrorEnvelope('oops')).toEqual({});
    expect(parseErrorEnvelope(null)).toEqual({});
  });
  it('error as a bare string is the message', () => {
    expect(parseErrorEnvelope({ error: 'rate limited' })).toEqual({ message: 'rate limited' });
  });
  it('a top-level message is used only when error carries none', () => {
    expect(parseErrorEnvelope({ message: 'top' })).toEqual({ message: 'top' });
    expect(parseErrorEnvelope({ error: { type: 't' }, message: 'top' })).toEqual({ errorType: 't', message: 'top' });
    expect(parseErrorEnvelope({ error: { message: 'inner' }, message: 'top' })).toEqual({ message: 'inner' });
    expect(parseErrorEnvelope({ error: 'inner', message: 'top' })).toEqual({ message: 'inner' });
    expect(parseErrorEnvelope({ message: 42 })).toEqual({});
  });
});
