/**
 * What the client refuses before anything is sent, word for word: a bad configuration (the constructor,
 * which the keeper turns into an exit 78 listing the problem) and a bad argument to a call (a bug or a
 * hostile item id; the worker logs the message and drops the item). Each message names the call, the
 * argument and the rule, says "not sent", and never contains the token. Nothing reaches the dispatcher:
 * a MockAgent with no interceptors and no network would turn any request into a different error.
 */
import { MockAgent } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WorkApi, fixedCredential, type Credential } from '../../src/api/client.js';
import { ApiError, BadRequestError, MalformedReplyError } from '../../src/api/errors.js';
import { NO_HEARTBEAT } from '../../src/api/types.js';

const TOKEN = 'pt-Arg5-secret-token-0123';
const ENV = 'env_args';
const WORK = 'work_a1';
const ORIGIN = 'https://api.qoder.test';

let agent: MockAgent;
let api: WorkApi;

beforeEach(() => {
  agent = new MockAgent();
  agent.disableNetConnect();
  api = new WorkApi({ apiUrl: ORIGIN, token: TOKEN, environmentId: ENV, dispatcher: agent });
});

afterEach(async () => {
  await agent.close();
});

/** The rejection of `p`: an ApiError of `cls` whose message does not contain the token. */
async function refused(p: Promise<unknown>, cls: abstract new (...args: never[]) => ApiError = BadRequestError): Promise<ApiError> {
  const err = await p.then(
    () => {
      throw new Error('expected the call to be refused');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(cls);
  expect((err as Error).message).not.toContain(TOKEN);
  return err as ApiError;
}

function construct(options: Partial<ConstructorParameters<typeof WorkApi>[0]>): unknown {
  try {
    new WorkApi({ apiUrl: ORIGIN, token: TOKEN, environmentId: ENV, dispatcher: agent, ...options });
  } catch (err) {
    expect(err).toBeInstanceOf(BadRequestError);
    expect((err as Error).message).not.toContain(TOKEN);
    return (err as Error).message;
  }
  return 'constructed';
}

describe('the constructor: bad configuration, said with the variable to fix', () => {
  it('a URL that does not parse', () => {
    expect(construct({ apiUrl: 'api.qoder.com' })).toBe(
      'apiUrl is not a valid URL; set QODER_API_URL to the gateway origin, e.g. https://api.qoder.com',
    );
  });

  it.each([
    ['another scheme', 'ftp://api.qoder.test', 'ftp://api.qoder.test'],
    ['a query', 'https://api.qoder.test/?region=eu', 'https://api.qoder.test'],
    ['a fragment', 'https://api.qoder.test/#x', 'https://api.qoder.test'],
    ['a user name', 'https://someone@api.qoder.test', 'https://api.qoder.test'],
    ['a password', `https://:${TOKEN}@api.qoder.test`, 'https://api.qoder.test'],
  ])('an origin with %s', (_what, apiUrl, shown) => {
    expect(construct({ apiUrl })).toBe(`apiUrl must be an http(s) origin without query, fragment or credentials, got ${shown}; set QODER_API_URL`);
  });

  it('http and https origins, with a path prefix, are taken', () => {
    expect(construct({ apiUrl: 'http://127.0.0.1:9' })).toBe('constructed');
    expect(construct({ apiUrl: 'https://gw.example/qoder/' })).toBe('constructed');
  });

  const badToken = 'the token is empty or contains characters not allowed in an HTTP header; check QODER_PAT';
  it('a token that cannot go into a header', () => {
    expect(construct({ token: '' })).toBe(badToken);
    expect(construct({ token: `${TOKEN}\r\nx-evil: 1` })).toBe(badToken);
    expect(construct({ token: undefined as unknown as string })).toBe(badToken);
    expect(construct({ token: 'x'.repeat(8193) })).toBe(badToken);
    expect(construct({ token: 'x'.repeat(8192) })).toBe('constructed');
  });

  it('an environment id that is not env_…', () => {
    const message = 'environmentId must be env_ followed by 1 to 128 of [A-Za-z0-9_-]; check QODER_ENVIRONMENT_ID';
    expect(construct({ environmentId: 'prod' })).toBe(message);
    // Not a string, even one that prints as a valid id (it would go into every URL path).
    expect(construct({ environmentId: ['env_a'] as unknown as string })).toBe(message);
  });

  it('a default deadline that is not a positive number of milliseconds', () => {
    for (const defaultTimeoutMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(construct({ defaultTimeoutMs })).toBe('defaultTimeoutMs must be a positive number of milliseconds');
    }
  });

  it('a user agent that cannot go into a header', () => {
    expect(construct({ userAgent: 'keeper\n1' })).toBe('userAgent contains characters not allowed in an HTTP header');
  });

  it('a fixed credential holds its one token (so it is scrubbed)', () => {
    const c: Credential = fixedCredential(TOKEN);
    expect(c.held).toEqual([TOKEN]);
    expect(c.current()).toBe(TOKEN);
    expect(c.reread()).toBe(TOKEN);
  });
});

describe('a call with a bad argument is refused, not sent', () => {
  it('poll: block_ms and reclaim_older_than_ms ranges, the Worker-ID', async () => {
    for (const blockMs of [0, 1000, 1.5]) {
      expect((await refused(api.poll({ workerId: 'w', blockMs }))).message).toBe('poll: not sent: blockMs must be an integer in 1..999');
    }
    expect((await refused(api.poll({ workerId: 'w', reclaimOlderThanMs: -1 }))).message).toBe(
      'poll: not sent: reclaimOlderThanMs must be an integer >= 0',
    );
    const err = await refused(api.poll({ workerId: 'a\r\nx-injected: 1' }));
    expect(err.message).toBe('poll: not sent: workerId must be 1 to 256 visible ASCII characters');
    expect(err.operation).toBe('poll');
    expect((await refused(api.poll({ workerId: 7 as unknown as string }))).message).toBe('poll: not sent: workerId must be 1 to 256 visible ASCII characters');
  });

  it('a header value: 256 characters are sent, 257 are not', async () => {
    agent
      .get(ORIGIN)
      .intercept({ path: `/api/v1/cloud/environments/${ENV}/work/poll?block_ms=999`, method: 'GET', headers: { 'worker-id': 'w'.repeat(256) } })
      .reply(200, 'null');
    expect((await api.poll({ workerId: 'w'.repeat(256) })).value).toBeNull();
    expect((await refused(api.poll({ workerId: 'w'.repeat(257) }))).message).toBe('poll: not sent: workerId must be 1 to 256 visible ASCII characters');
  });

  it('ack: the Worker-ID', async () => {
    expect((await refused(api.ack(WORK, { workerId: '' }))).message).toBe('ack: not sent: workerId must be 1 to 256 visible ASCII characters');
  });

  it('heartbeat: the precondition, the ttl and the Idempotency-Key', async () => {
    const hb = (over: Partial<{ expectedLastHeartbeat: unknown; desiredTtlSeconds: unknown; idempotencyKey: unknown }>) =>
      api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 60, idempotencyKey: 'k1', ...over } as never);
    const precondition = 'heartbeat: not sent: expectedLastHeartbeat must be NO_HEARTBEAT or the previous last_heartbeat (1 to 256 characters)';
    expect((await refused(hb({ expectedLastHeartbeat: '' }))).message).toBe(precondition);
    expect((await refused(hb({ expectedLastHeartbeat: 'x'.repeat(257) }))).message).toBe(precondition);
    expect((await refused(hb({ expectedLastHeartbeat: 5 }))).message).toBe(precondition);
    const err = await refused(hb({ expectedLastHeartbeat: 'a\ud800' }));
    expect(err.message).toBe('heartbeat: not sent: expectedLastHeartbeat is not well-formed Unicode');
    expect(err.operation).toBe('heartbeat');
    expect((await refused(hb({ desiredTtlSeconds: 0 }))).message).toBe('heartbeat: not sent: desiredTtlSeconds must be an integer >= 1');
    expect((await refused(hb({ desiredTtlSeconds: '60' }))).message).toBe('heartbeat: not sent: desiredTtlSeconds must be an integer >= 1');
    expect((await refused(hb({ idempotencyKey: 'k 1\n' }))).message).toBe('heartbeat: not sent: idempotencyKey must be 1 to 256 visible ASCII characters');
  });

  it('heartbeat: a precondition of 256 characters is sent', async () => {
    const expected = 'x'.repeat(256);
    agent
      .get(ORIGIN)
      .intercept({ path: `/api/v1/cloud/environments/${ENV}/work/${WORK}/heartbeat?expected_last_heartbeat=${expected}&desired_ttl_seconds=60`, method: 'POST' })
      .reply(412, {});
    const err = await refused(api.heartbeat(WORK, { expectedLastHeartbeat: expected, desiredTtlSeconds: 60, idempotencyKey: 'k' }), ApiError);
    expect(err.kind).toBe('lease_lost');
  });

  it('update_metadata: an object of strings and nulls only', async () => {
    for (const metadata of [null, ['a'], 'a=b']) {
      const err = await refused(api.updateMetadata(WORK, metadata as never));
      expect(err.message).toMatch(/^update_metadata: not sent: metadata must be an object, got (null|an array|a string)$/);
    }
    expect((await refused(api.updateMetadata(WORK, ['a'] as never))).message).toBe('update_metadata: not sent: metadata must be an object, got an array');
    expect((await refused(api.updateMetadata(WORK, { exit_code: 0 } as never))).message).toBe(
      'update_metadata: not sent: metadata["exit_code"] must be a string or null',
    );
    expect((await refused(api.updateMetadata(WORK, { ['k'.repeat(80)]: 1 } as never))).message).toBe(
      `update_metadata: not sent: metadata[${JSON.stringify('k'.repeat(64))}] must be a string or null`,
    );
  });

  it('stop: force must be a boolean', async () => {
    const err = await refused(api.stop(WORK, { force: 'yes' as never }));
    expect(err.message).toBe('stop: not sent: force must be a boolean');
    expect(err.operation).toBe('stop');
  });

  it('a deadline that is not a positive number, or null without a signal', async () => {
    for (const timeoutMs of [0, -5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect((await refused(api.get(WORK, { timeoutMs }))).message).toBe('get: not sent: timeoutMs must be a positive number of milliseconds');
    }
    expect((await refused(api.stats({ timeoutMs: null }))).message).toBe('stats: not sent: timeoutMs may be null only with a signal (a call needs a deadline)');
  });

  it.each([
    ['ack', () => api.ack('work_../../x', { workerId: 'w' })],
    ['heartbeat', () => api.heartbeat('work_../../x', { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 60, idempotencyKey: 'k' })],
    ['get', () => api.get('work_../../x')],
    ['update_metadata', () => api.updateMetadata('work_../../x', {})],
    ['stop', () => api.stop('work_../../x')],
  ])('%s: a work id that may not go into a URL path', async (operation, call) => {
    const err = await refused(call(), MalformedReplyError);
    expect(err.message).toBe(
      `${operation}: not sent: work id "work_../../x" is not work_ followed by 1 to 128 of [A-Za-z0-9_-]; drop the item`,
    );
    expect(err.operation).toBe(operation);
  });

  it('a work id that is not a string is described, a long one cut to 64 characters', async () => {
    expect((await refused(api.get(42 as never), MalformedReplyError)).message).toBe(
      'get: not sent: work id a number is not work_ followed by 1 to 128 of [A-Za-z0-9_-]; drop the item',
    );
    // An array that prints as a valid id is still not one.
    expect((await refused(api.get(['work_a1'] as never), MalformedReplyError)).message).toBe(
      'get: not sent: work id an array is not work_ followed by 1 to 128 of [A-Za-z0-9_-]; drop the item',
    );
    const long = `work_${'z'.repeat(200)}`;
    expect((await refused(api.get(long), MalformedReplyError)).message).toBe(
      `get: not sent: work id ${JSON.stringify(long.slice(0, 64))} is not work_ followed by 1 to 128 of [A-Za-z0-9_-]; drop the item`,
    );
  });
});
