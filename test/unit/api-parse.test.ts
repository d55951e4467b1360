import { describe, expect, it } from 'vitest';
import { makeScrubber, parseRetryAfter, sanitizeServerText } from '../../src/api/classify.js';
import { wireBeat, wireItem } from '../support/wire.js';
import { ReplyShapeError, isRfc3339, parseHeartbeat, parseStats, parseWorkItem, parseWorkItemOrNull } from '../../src/api/parse.js';

const item = wireItem;
const beat = wireBeat;

function fieldOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof ReplyShapeError) return err.field;
    throw err;
  }
  throw new Error('expected a ReplyShapeError');
}

describe('isRfc3339', () => {
  it.each([
    '2026-07-01T08:15:06Z',
    '2026-07-01T08:15:06.1Z',
    '2026-07-01T08:15:06.120394Z',
    '2026-07-01T08:15:06.123456789Z',
    '2026-07-01T08:15:06+00:00',
    '2026-07-01T08:15:06.120394+05:30',
    '2026-07-01T08:15:06.120394-08:00',
    '2026-07-01t08:15:06z',
    '2024-02-29T00:00:00Z',
    '2016-12-31T23:59:60Z',
  ])('accepts %s', (s) => expect(isRfc3339(s)).toBe(true));

  it.each([
    '',
    'NO_HEARTBEAT',
    '2026-07-01T08:15:06',
    '2026-07-01 08:15:06Z',
    '2026-07-01T08:15:06.Z',
    '2026-07-01T08:15:06.1234567890Z',
    '2026-07-01T08:15:06+0000',
    '2026-07-01T08:15Z',
    '2026-13-01T08:15:06Z',
    '2026-02-29T08:15:06Z',
    '2026-04-31T08:15:06Z',
    '2026-07-01T24:00:00Z',
    '2026-07-01T08:60:00Z',
    '2026-07-01T08:15:61Z',
    '2026-07-01T08:15:06+24:00',
    ' 2026-07-01T08:15:06Z',
    '2026-07-01T08:15:06Z\n',
    '２026-07-01T08:15:06Z',
  ])('rejects %j', (s) => expect(isRfc3339(s)).toBe(false));
});

describe('parseWorkItem', () => {
  it('returns the parsed object itself, unknown fields and unknown data.type included', () => {
    const v = item({ extra: { nested: true }, data: { type: 'healthcheck', id: 'hc_1', more: 1 }, metadata: { a: 'b' } });
    expect(parseWorkItem(v)).toBe(v);
  });

  it('accepts every state and null poll replies', () => {
    for (const state of ['queued', 'starting', 'active', 'stopping', 'stopped']) expect(parseWorkItem(item({ state })).state).toBe(state);
    expect(parseWorkItemOrNull(null)).toBeNull();
  });

  it.each<[string, Record<string, unknown> | unknown, string]>([
    ['not an object', [], '(body)'],
    ['type', item({ type: 'job' }), 'type'],
    ['id prefix', item({ id: 'wrk_01' }), 'id'],
    ['id path traversal', item({ id: 'work_../x' }), 'id'],
    ['id percent-encoded slash', item({ id: 'work_%2F' }), 'id'],
    ['id empty suffix', item({ id: 'work_' }), 'id'],
    ['id too long', item({ id: `work_${'a'.repeat(129)}` }), 'id'],
    ['id number', item({ id: 7 }), 'id'],
    ['environment prefix', item({ environment_id: 'environment_1' }), 'environment_id'],
    ['environment chars', item({ environment_id: 'env_a b' }), 'environment_id'],
    ['missing data', item({ data: undefined }), 'data'],
    ['data.id number', item({ data: { type: 'session', id: 1 } }), 'data.id'],
    ['data.id control char', item({ data: { type: 'session', id: 'sess\n1' } }), 'data.id'],
    ['unknown state', item({ state: 'running' }), 'state'],
    ['created_at null', item({ created_at: null }), 'created_at'],
    ['stopped_at missing', item({ stopped_at: undefined }), 'stopped_at'],
    ['stopped_at number', item({ stopped_at: 1 }), 'stopped_at'],
    ['metadata value number', item({ metadata: { exit_code: 0 } }), 'metadata["exit_code"]'],
    ['metadata value null', item({ metadata: { a: null } }), 'metadata["a"]'],
    ['metadata array', item({ metadata: [] }), 'metadata'],
  ])('rejects %s', (_name, value, field) => {
    expect(fieldOf(() => parseWorkItem(value))).toBe(field);
  });
});

describe('parseHeartbeat', () => {
  it('keeps last_heartbeat as the exact string received', () => {
    for (const s of ['2026-07-01T08:15:06.120394+00:00', '2026-07-01t08:15:06z', '2026-07-01T08:15:06.123456789-03:30']) {
      expect(parseHeartbeat(beat({ last_heartbeat: s })).last_heartbeat).toBe(s);
    }
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['type', beat({ type: 'work' }), 'type'],
    ['empty last_heartbeat', beat({ last_heartbeat: '' }), 'last_heartbeat'],
    ['not a timestamp', beat({ last_heartbeat: 'yesterday' }), 'last_heartbeat'],
    ['no offset', beat({ last_heartbeat: '2026-07-01T08:15:06.120394' }), 'last_heartbeat'],
    ['epoch number', beat({ last_heartbeat: 1751357706 }), 'last_heartbeat'],
    ['lease_extended string', beat({ lease_extended: 'true' }), 'lease_extended'],
    ['lease_extended missing', beat({ lease_extended: undefined }), 'lease_extended'],
    ['unknown state', beat({ state: 'leased' }), 'state'],
    ['ttl zero', beat({ ttl_seconds: 0 }), 'ttl_seconds'],
    ['ttl negative', beat({ ttl_seconds: -5 }), 'ttl_seconds'],
    ['ttl fraction', beat({ ttl_seconds: 1.5 }), 'ttl_seconds'],
    ['ttl string', beat({ ttl_seconds: '60' }), 'ttl_seconds'],
    ['ttl huge', beat({ ttl_seconds: 1e300 }), 'ttl_seconds'],
  ])('rejects %s', (_name, value, field) => {
    expect(fieldOf(() => parseHeartbeat(value))).toBe(field);
  });
});

describe('parseStats', () => {
  it('accepts a stats object and rejects negative counts', () => {
    const v = { type: 'work_queue_stats', depth: 2, pending: 1, oldest_queued_at: null, workers_polling: 0 };
    expect(parseStats(v)).toBe(v);
    expect(fieldOf(() => parseStats({ ...v, depth: -1 }))).toBe('depth');
    expect(fieldOf(() => parseStats({ ...v, oldest_queued_at: 3 }))).toBe('oldest_queued_at');
  });
});

describe('Retry-After', () => {
  const now = Date.parse('2026-11-28T10:00:00Z');
  it('reads delay-seconds', () => {
    expect(parseRetryAfter('7', now)).toBe(7000);
    expect(parseRetryAfter(' 0 ', now)).toBe(0);
    expect(parseRetryAfter(['3', '9'], now)).toBe(3000);
  });
  it('reads an HTTP date, and a past date as 0', () => {
    expect(parseRetryAfter('Sat, 28 Nov 2026 10:00:05 GMT', now)).toBe(5000);
    expect(parseRetryAfter('Sat, 28 Nov 2026 09:00:00 GMT', now)).toBe(0);
  });
  it('ignores garbage', () => {
    for (const v of [undefined, '', 'soon', '-1', '12abc', '1e3']) expect(parseRetryAfter(v, now)).toBeUndefined();
  });
});

describe('sanitizeServerText', () => {
  const scrub = makeScrubber(['pt-s3cr3t/+=']);
  it('removes control characters, the token (raw and URL-encoded) and cuts to 300 characters', () => {
    const out = sanitizeServerText(`bad\u0000\u001b[31m token pt-s3cr3t/+= and ${encodeURIComponent('pt-s3cr3t/+=')}\n${'x'.repeat(1000)}`, scrub);
    expect(out).not.toMatch(/[\u0000-\u001f\u007f]/);
    expect(out).not.toContain('pt-s3cr3t');
    expect(out).toContain('[REDACTED]');
    expect(out.length).toBeLessThanOrEqual(301);
  });
  it('catches a token split by control characters', () => {
    expect(sanitizeServerText('pt-s3c\u0000r3t/+= and pt-s3\u200bcr3t/+=', scrub)).toBe('[REDACTED] and [REDACTED]');
  });
});
