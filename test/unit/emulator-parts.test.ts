import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isRfc3339 } from '../../src/api/parse.js';
import { formatMicros, realClock } from '../../src/emulator/clock.js';
import { parseSettingsPatch } from '../../src/emulator/core.js';
import { EventLog } from '../../src/emulator/events.js';
import { FaultRegistry, parseFaultSpec } from '../../src/emulator/faults.js';
import { WORK_ID_RE, newSessionId, workIdFactory } from '../../src/emulator/ids.js';
import { mergeMetadata } from '../../src/emulator/metadata.js';
import { EmulatorError } from '../../src/emulator/types.js';
import { matchWorkRoute } from '../../src/emulator/work-api.js';

const MICRO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

const status = (fn: () => unknown): number => {
  try {
    fn();
  } catch (e) {
    if (e instanceof EmulatorError) return e.status;
    throw e;
  }
  return 200;
};

describe('emulator timestamps', () => {
  it('formats microseconds as RFC 3339 UTC with exactly six fractional digits', () => {
    const us = Date.UTC(2026, 6, 1, 8, 15, 6) * 1000 + 120_394;
    expect(formatMicros(us)).toBe('2026-07-01T08:15:06.120394Z');
    expect(formatMicros(Date.UTC(2026, 0, 1) * 1000)).toBe('2026-01-01T00:00:00.000000Z');
    expect(formatMicros(Date.UTC(2026, 0, 1) * 1000 + 7)).toBe('2026-01-01T00:00:00.000007Z');
  });

  it('round-trips every microsecond value and keeps order', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 4_102_444_800_000_000 }), fc.integer({ min: 1, max: 10_000_000 }), (us, d) => {
        const a = formatMicros(us);
        const b = formatMicros(us + d);
        expect(a).toMatch(MICRO_RE);
        expect(Date.parse(a)).toBe(Math.floor(us / 1000));
        expect(Number(a.slice(20, 26))).toBe(us % 1_000_000);
        expect(a < b).toBe(true);
      }),
    );
  });

  it('the real clock is strictly increasing and agrees with Date.now() to the millisecond', () => {
    const clock = realClock();
    let prev = 0;
    for (let i = 0; i < 5000; i++) {
      const before = Date.now();
      const us = clock.nowUs();
      const after = Date.now();
      expect(us).toBeGreaterThan(prev);
      // bumps of 1 µs may push it past the ms in a burst; never by more than a few ms
      expect(Math.floor(us / 1000)).toBeGreaterThanOrEqual(before);
      expect(Math.floor(us / 1000)).toBeLessThanOrEqual(after + 5);
      prev = us;
    }
  });

  it('validates RFC 3339', () => {
    for (const ok of ['2026-07-01T08:15:06.120394Z', '2026-07-01T08:15:06Z', '2026-07-01t08:15:06.1+02:00', '2026-07-01T08:15:06.123456789-05:30']) {
      expect(isRfc3339(ok), ok).toBe(true);
    }
    for (const bad of ['', 'NO_HEARTBEAT', '2026-07-01', '2026-07-01 08:15:06Z', '2026-13-01T08:15:06Z', '2026-07-01T25:15:06Z', '2026-07-01T08:15:06', '1751357706', '2026-07-01T08:15:06.Z']) {
      expect(isRfc3339(bad), bad).toBe(false);
    }
  });
});

describe('emulator ids', () => {
  it('work ids are work_ + 24 [A-Za-z0-9] and sort in creation order', () => {
    const next = workIdFactory();
    const ids: string[] = [];
    let ms = 1_780_000_000_000;
    for (let i = 0; i < 500; i++) {
      if (i % 7 === 0) ms += 1;
      ids.push(next(ms));
    }
    for (const id of ids) expect(id).toMatch(WORK_ID_RE);
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    // a clock going backwards does not break the order
    const back = next(ms - 10_000);
    expect(back > ids[ids.length - 1]!).toBe(true);
    expect(newSessionId()).toMatch(/^sess_[A-Za-z0-9]{24}$/);
  });
});

describe('emulator metadata merge patch', () => {
  it('upserts, deletes, leaves the rest, and never mutates the input', () => {
    const cur = { a: '1', b: '2' };
    expect(mergeMetadata(cur, { a: 'x', b: null, c: '3' })).toEqual({ a: 'x', c: '3' });
    expect(mergeMetadata(cur, undefined)).toEqual(cur);
    expect(mergeMetadata(cur, { zz: null })).toEqual(cur);
    expect(cur).toEqual({ a: '1', b: '2' });
  });

  it('enforces 16 keys, key 1..64, value <= 512, string|null values, atomically', () => {
    const full = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, 'v']));
    expect(Object.keys(mergeMetadata({}, full))).toHaveLength(16);
    expect(status(() => mergeMetadata(full, { extra: 'v' }))).toBe(400);
    expect(Object.keys(mergeMetadata(full, { k0: null, extra: 'v' }))).toHaveLength(16);
    expect(status(() => mergeMetadata({}, { ['k'.repeat(64)]: 'v' }))).toBe(200);
    expect(status(() => mergeMetadata({}, { ['k'.repeat(65)]: 'v' }))).toBe(400);
    expect(status(() => mergeMetadata({}, { '': 'v' }))).toBe(400);
    expect(status(() => mergeMetadata({}, { k: 'v'.repeat(512) }))).toBe(200);
    expect(status(() => mergeMetadata({}, { k: 'v'.repeat(513) }))).toBe(400);
    expect(status(() => mergeMetadata({}, { k: 'é'.repeat(512) }))).toBe(200); // characters, not bytes
    for (const bad of [1, true, {}, [], undefined] as unknown[]) {
      expect(status(() => mergeMetadata({}, { k: bad }))).toBe(400);
    }
    for (const bad of [null, 'x', 3, ['a']] as unknown[]) expect(status(() => mergeMetadata({}, bad))).toBe(400);
    const proto = mergeMetadata({}, JSON.parse('{"__proto__":"x"}'));
    expect(Object.getPrototypeOf(proto)).toBe(Object.prototype);
    expect(Object.keys(proto)).toEqual(['__proto__']);
  });
});

describe('emulator routing', () => {
  const P = '/api/v1/cloud/environments/env_a/work';
  it('matches the eight endpoints exactly', () => {
    expect(matchWorkRoute('GET', P)).toEqual({ endpoint: 'list', envId: 'env_a' });
    expect(matchWorkRoute('GET', `${P}/poll`)).toEqual({ endpoint: 'poll', envId: 'env_a' });
    expect(matchWorkRoute('GET', `${P}/stats`)).toEqual({ endpoint: 'stats', envId: 'env_a' });
    expect(matchWorkRoute('GET', `${P}/work_x`)).toEqual({ endpoint: 'get', envId: 'env_a', workId: 'work_x' });
    expect(matchWorkRoute('POST', `${P}/work_x`)).toEqual({ endpoint: 'update_metadata', envId: 'env_a', workId: 'work_x' });
    expect(matchWorkRoute('POST', `${P}/work_x/ack`)).toEqual({ endpoint: 'ack', envId: 'env_a', workId: 'work_x' });
    expect(matchWorkRoute('POST', `${P}/work_x/heartbeat`)).toEqual({ endpoint: 'heartbeat', envId: 'env_a', workId: 'work_x' });
    expect(matchWorkRoute('POST', `${P}/work_x/stop`)).toEqual({ endpoint: 'stop', envId: 'env_a', workId: 'work_x' });
  });

  it('refuses near misses', () => {
    for (const p of [`${P}/`, `${P}/work_x/`, `${P}/work_x/ack/x`, `${P}/work_x/nope`, '/api/v1/cloud/environments//work', '/api/v1/cloud/environments/env_a', '/api/v1/environments/env_a/work', `${P}s`]) {
      expect(matchWorkRoute('POST', p), p).toBeNull();
    }
    expect(matchWorkRoute('POST', `${P}/poll`)).toEqual({ allow: 'GET' });
    expect(matchWorkRoute('GET', `${P}/work_x/heartbeat`)).toEqual({ allow: 'POST' });
    expect(matchWorkRoute('DELETE', `${P}/work_x`)).toEqual({ allow: 'GET, POST' });
  });
});

describe('emulator fault specs', () => {
  it('fills defaults and refuses bad specs', () => {
    expect(parseFaultSpec({ endpoint: 'heartbeat', kind: 'status' })).toEqual({ endpoint: 'heartbeat', kind: 'status', times: 1, status: 500 });
    expect(parseFaultSpec({ endpoint: '*', kind: 'rate_limit' })).toMatchObject({ retry_after_s: 1 });
    expect(parseFaultSpec({ endpoint: 'poll', kind: 'malformed' })).toMatchObject({ body: '{"type":' });
    const bad: unknown[] = [
      null,
      { endpoint: 'nope', kind: 'reset' },
      { endpoint: 'poll', kind: 'nope' },
      { endpoint: 'poll', kind: 'latency' },
      { endpoint: 'poll', kind: 'latency', latency_ms: -1 },
      { endpoint: 'poll', kind: 'status', status: 200 },
      { endpoint: 'poll', kind: 'reset', times: -1 },
      { endpoint: 'poll', kind: 'reset', times: 1.5 },
      { endpoint: 'ack', kind: 'not_extended' },
      { endpoint: 'poll', kind: 'malformed', body: 3 },
      { endpoint: 'poll', kind: 'reset', work_id: 3 },
    ];
    for (const b of bad) expect(status(() => parseFaultSpec(b)), JSON.stringify(b)).toBe(400);
  });

  it('matches by endpoint and work id, first added first, counting down times (0 = forever)', () => {
    const r = new FaultRegistry();
    const a = r.add({ endpoint: 'heartbeat', kind: 'status', times: 2, work_id: 'work_a' });
    const b = r.add({ endpoint: '*', kind: 'reset', times: 0 });
    expect(r.take('heartbeat', 'work_a')?.id).toBe(a.id);
    expect(r.take('heartbeat', 'work_b')?.id).toBe(b.id);
    expect(r.take('heartbeat', 'work_a')?.id).toBe(a.id);
    expect(r.take('heartbeat', 'work_a')?.id).toBe(b.id); // a is used up
    for (let i = 0; i < 5; i++) expect(r.take('poll', undefined)?.id).toBe(b.id);
    expect(r.list().map((f) => f.id)).toEqual([b.id]);
    expect(r.clear()).toBe(1);
    expect(r.take('poll', undefined)).toBeUndefined();
    r.add({ endpoint: '*', kind: 'not_extended' });
    expect(r.take('ack', 'work_a')).toBeUndefined(); // not_extended only ever hits heartbeats
    expect(r.take('heartbeat', 'work_a')?.kind).toBe('not_extended');
  });
});

describe('emulator settings and event log', () => {
  it('validates settings patches', () => {
    expect(parseSettingsPatch({ ttl_override_seconds: 1, reclaim_default_ms: 0 })).toEqual({ ttl_override_seconds: 1, reclaim_default_ms: 0 });
    expect(parseSettingsPatch({ ttl_override_seconds: null })).toEqual({ ttl_override_seconds: null });
    for (const bad of [{ ttl_override_seconds: 0 }, { ttl_override_seconds: 1.5 }, { ttl_override_seconds: '2' }, { reclaim_default_ms: -1 }, { starting_timeout_ms: 0 }, { environment_type: 'x' }, { nope: 1 }, []]) {
      expect(status(() => parseSettingsPatch(bad)), JSON.stringify(bad)).toBe(400);
    }
  });

  it('numbers events, filters by seq, drops undefined fields, notifies subscribers', () => {
    let now = 1000;
    const log = new EventLog(() => now);
    const seen: string[] = [];
    const off = log.subscribe((e) => seen.push(e.type));
    log.append({ type: 'a', work_id: undefined, x: 1 });
    now = 2000;
    log.append({ type: 'b', t_ms: 1500 });
    off();
    log.append({ type: 'c' });
    expect(log.since(0)).toEqual([
      { seq: 1, t_ms: 1000, at: new Date(1000).toISOString(), type: 'a', x: 1 },
      { seq: 2, t_ms: 1500, at: new Date(1500).toISOString(), type: 'b' },
      { seq: 3, t_ms: 2000, at: new Date(2000).toISOString(), type: 'c' },
    ]);
    expect(log.since(2).map((e) => e.seq)).toEqual([3]);
    expect(seen).toEqual(['a', 'b']);
    log.clear();
    expect(log.since(0)).toEqual([]);
    expect(log.append({ type: 'd' }).seq).toBe(4);
  });
});
