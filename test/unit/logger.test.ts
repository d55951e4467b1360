import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { TransientError } from '../../src/api/errors.js';
import { createLogger, makeScrubber, serializeError, syslogPriority, type LoggerOptions } from '../../src/observe/logger.js';
import { renderPrettyLine } from '../../src/observe/pretty.js';

const TOKEN = 'pt-SECRET-abc123';

/** A synchronous in-memory destination: pino writes each line with one write() call. */
function capture(opts: Partial<LoggerOptions> = {}) {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  const log = createLogger({ level: 'trace', format: 'json', journal: false, destination, ...opts });
  return { log, lines, text: () => lines.join('') };
}

/** Logs the token every way a careless caller could. */
function leakEverywhere(log: ReturnType<typeof capture>['log']): void {
  const err = new TransientError(`connect failed for Bearer ${TOKEN}`, { status: 503, requestId: 'req_1', operation: 'heartbeat' });
  const wrapped = new Error(`outer ${TOKEN}`, { cause: err });
  log.info({ work_id: 'work_1', token: TOKEN }, 'heartbeat');
  log.info(`interpolated ${TOKEN}`);
  log.info('format %s', TOKEN);
  log.warn({ err }, 'heartbeat_failed');
  log.error(wrapped);
  log.error({ err: wrapped, note: { deep: { deeper: [`x ${TOKEN} y`] } } }, 'nested');
  log.info({ headers: { authorization: `Bearer ${TOKEN}`, 'x-other': TOKEN }, request: { url: `https://h/?t=${TOKEN}` } }, 'request');
  log.info({ [`key_${TOKEN}`]: 1 }, 'key');
  log.child({ bound: TOKEN }).info({ x: 1 }, 'child');
  log.fatal({ err: `a thrown string ${TOKEN}` }, 'thrown_string');
}

afterEach(() => {
  vi.unstubAllEnvs();
});

describe('createLogger: json lines', () => {
  it('writes one JSON object per event with an ISO time, msg = event, no pid/hostname', () => {
    const { log, lines } = capture({ base: { svc: 'lease-keeper' } });
    log.info({ work_id: 'work_1', session_id: 's_1', worker_id: 'w1', request_id: 'req_1', lease_left_ms: 9000 }, 'heartbeat');
    expect(lines).toHaveLength(1);
    expect(lines[0]!.endsWith('\n')).toBe(true);
    const rec = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(rec).toEqual({
      level: 30,
      time: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      svc: 'lease-keeper',
      work_id: 'work_1',
      session_id: 's_1',
      worker_id: 'w1',
      request_id: 'req_1',
      lease_left_ms: 9000,
      msg: 'heartbeat',
    });
  });

  it('serializes errors under err with type, message, stack, code, kind, status, requestId', () => {
    const { log, lines } = capture();
    const err = new TransientError('upstream 503', { status: 503, requestId: 'req_9', operation: 'poll' });
    const sys = Object.assign(new Error('reset'), { code: 'ECONNRESET', headers: { authorization: 'x' } });
    log.warn({ err }, 'poll_failed');
    log.warn({ err: sys }, 'poll_failed');
    const a = JSON.parse(lines[0]!).err;
    expect(a).toMatchObject({ type: 'TransientError', message: 'upstream 503', kind: 'transient', status: 503, requestId: 'req_9', operation: 'poll' });
    expect(a.stack).toContain('upstream 503');
    const b = JSON.parse(lines[1]!).err;
    expect(b).toMatchObject({ type: 'Error', message: 'reset', code: 'ECONNRESET' });
    expect(b.headers).toBeUndefined(); // picked fields only
  });

  it('serializes causes and non-Error values', () => {
    expect(serializeError(new Error('outer', { cause: new RangeError('inner') }))).toMatchObject({
      type: 'Error',
      message: 'outer',
      cause: { type: 'RangeError', message: 'inner' },
    });
    expect(serializeError('boom')).toEqual({ type: 'string', message: 'boom' });
  });

  it('honours the level', () => {
    const { log, lines } = capture({ level: 'warn' });
    log.info('quiet');
    log.warn('loud');
    expect(lines.map((l) => JSON.parse(l).msg)).toEqual(['loud']);
    const silent = capture({ level: 'silent' });
    silent.log.fatal('nothing');
    expect(silent.lines).toEqual([]);
  });

  it('redacts token, *.token, authorization, headers.authorization, config.token without a secrets list', () => {
    const { log, lines } = capture();
    log.info({ token: 'a1', item: { token: 'a2' }, authorization: 'a3', req: { authorization: 'a4' }, headers: { authorization: 'a5' }, config: { token: 'a6' } }, 'ev');
    const rec = JSON.parse(lines[0]!);
    expect(rec).toMatchObject({
      token: '[REDACTED]',
      item: { token: '[REDACTED]' },
      authorization: '[REDACTED]',
      req: { authorization: '[REDACTED]' },
      headers: { authorization: '[REDACTED]' },
      config: { token: '[REDACTED]' },
    });
  });
});

describe('createLogger: the token is never printed', () => {
  it.each(['json', 'pretty'] as const)('in %s: msg, err.message, stack, cause, nested fields, keys, bindings', (format) => {
    const { log, lines, text } = capture({ format, secrets: [TOKEN] });
    leakEverywhere(log);
    expect(lines.length).toBe(10);
    expect(text()).not.toContain(TOKEN);
    expect(text()).not.toContain('SECRET-abc');
    expect(text()).toContain('[REDACTED]');
    if (format === 'json') for (const l of lines) expect(() => JSON.parse(l)).not.toThrow();
  });

  it('would leak through redact alone (why the lines are scrubbed)', () => {
    const { log, text } = capture({ secrets: [] });
    leakEverywhere(log);
    expect(text()).toContain(TOKEN);
  });

  it('keeps the JSON valid when the secret has characters JSON escapes', () => {
    const odd = 'pt-"quo\\te"-SECRET';
    const { log, lines, text } = capture({ secrets: [odd] });
    log.info({ a: odd, b: { c: `x${odd}y` } }, `m ${odd}`);
    log.warn({ err: new Error(odd) }, 'e');
    expect(text()).not.toContain(JSON.stringify(odd).slice(1, -1));
    expect(text()).not.toContain(odd);
    const rec = JSON.parse(lines[0]!);
    expect(rec).toMatchObject({ a: '[REDACTED]', b: { c: 'x[REDACTED]y' }, msg: 'm [REDACTED]' });
    const pretty = capture({ format: 'pretty', secrets: [odd] });
    pretty.log.info({ a: odd }, `m ${odd}`);
    expect(pretty.text()).not.toContain(odd);
  });

  it('scrubs every secret given, longest first, and ignores tiny ones', () => {
    const scrub = makeScrubber(['abcd', 'abcdefgh', 'x', '']);
    expect(scrub('abcdefgh abcd x')).toBe('[REDACTED] [REDACTED] x');
  });
});

describe('createLogger: journald priority prefix', () => {
  const levels = [
    ['fatal', 2],
    ['error', 3],
    ['warn', 4],
    ['info', 6],
    ['debug', 7],
    ['trace', 7],
  ] as const;

  it('prefixes each line with <N> when journal is on, the JSON after it unchanged', () => {
    const { log, lines } = capture({ journal: true });
    for (const [level] of levels) log[level]({ k: 1 }, `ev_${level}`);
    expect(lines).toHaveLength(levels.length);
    levels.forEach(([level, prio], i) => {
      const m = /^<(\d)>(\{.*\})\n$/.exec(lines[i]!);
      expect(m?.[1]).toBe(String(prio));
      expect(JSON.parse(m![2]!)).toMatchObject({ msg: `ev_${level}`, k: 1 });
    });
  });

  it('prefixes pretty lines too, and still scrubs them', () => {
    const { log, lines } = capture({ journal: true, format: 'pretty', secrets: [TOKEN] });
    log.error({ err: new Error(TOKEN) }, 'bad');
    expect(lines[0]).toMatch(/^<3>\d\d:\d\d:\d\d\.\d{3} ERROR {2}bad {2}err=\[REDACTED\]\n$/);
  });

  it('writes no prefix when journal is off', () => {
    const { log, lines } = capture({ journal: false });
    for (const [level] of levels) log[level]('ev');
    for (const l of lines) expect(l.startsWith('{"level":')).toBe(true);
  });

  it('defaults to on when JOURNAL_STREAM is set, off otherwise', () => {
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer | string, _e, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    vi.stubEnv('JOURNAL_STREAM', '8:12345');
    createLogger({ level: 'info', format: 'json', destination }).warn('on');
    vi.stubEnv('JOURNAL_STREAM', '');
    createLogger({ level: 'info', format: 'json', destination }).warn('off');
    expect(lines[0]).toMatch(/^<4>\{/);
    expect(lines[1]).toMatch(/^\{/);
  });

  it('maps pino levels to syslog priorities', () => {
    expect([60, 50, 40, 30, 20, 10].map(syslogPriority)).toEqual([2, 3, 4, 6, 7, 7]);
  });
});

describe('createLogger: pretty', () => {
  it('writes HH:MM:SS.mmm LEVEL  event  key=value, one line per event', () => {
    const { log, lines } = capture({ format: 'pretty', base: { svc: 'lk' } });
    log.info({ work_id: 'work_1', lease_left_ms: 9000, ok: true, note: 'two words' }, 'heartbeat');
    log.warn({ work_id: 'work_1', err: new TransientError('socket hang up', { status: 502 }) }, 'heartbeat_failed');
    log.info('bare');
    expect(lines[0]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO {3}heartbeat {2}work_id=work_1 lease_left_ms=9000 ok=true note="two words"\n$/);
    expect(lines[1]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} WARN {3}heartbeat_failed {2}work_id=work_1 err="socket hang up" err\.kind=transient err\.status=502\n$/);
    expect(lines[2]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO {3}bare\n$/);
  });

  it('keeps values short', () => {
    const line = renderPrettyLine(JSON.stringify({ level: 30, time: '2024-01-01T00:00:00.000Z', msg: 'ev', big: 'y'.repeat(500), obj: { a: 'z'.repeat(500) } }));
    expect(line.length).toBeLessThan(250);
    expect(line.split('\n')).toHaveLength(2);
  });

  it('shows the local time of the event', () => {
    const t = new Date(2024, 0, 2, 3, 4, 5, 67);
    const line = renderPrettyLine(JSON.stringify({ level: 50, time: t.toISOString(), msg: 'ev' }));
    expect(line).toBe('03:04:05.067 ERROR  ev\n');
  });

  it('passes a line that is not JSON through', () => {
    expect(renderPrettyLine('not json\n')).toBe('not json\n');
  });
});
