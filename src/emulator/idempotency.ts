import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Reply } from './http.js';
import { EmulatorError, badRequest } from './types.js';

/**
 * `Idempotency-Key` (or `X-Idempotency-Key`) on a POST, as the API conventions describe it: the same key
 * on the same call replays the stored reply without applying the call again; the same key on a different
 * call is refused (422). "The same call" is the fingerprint below: method, path, query parameters (in any
 * order), `Worker-ID` and the body byte for byte. Other headers (the token among them, so a retry after a
 * token rotation still replays) are not part of it.
 */

/** The reply header a replay carries (Stripe's name for it), so clients and tests can tell. */
export const REPLAYED_HEADER = 'idempotent-replayed';

const KEY_RE = /^[\x21-\x7e]{1,255}$/;

/** The key a request carries, undefined when none; a malformed or ambiguous one is 400. */
export function idempotencyKeyOf(req: IncomingMessage): string | undefined {
  const values = [req.headers['idempotency-key'], req.headers['x-idempotency-key']]
    .flat()
    .filter((v): v is string => typeof v === 'string');
  if (values.length === 0) return undefined;
  const [key] = values;
  if (values.some((v) => v !== key)) throw badRequest('Idempotency-Key and X-Idempotency-Key disagree; send one key per request');
  if (!KEY_RE.test(key!)) throw badRequest('Idempotency-Key must be 1 to 255 visible ASCII characters');
  return key;
}

/** What makes two requests "the same call" for one key. */
export function callFingerprint(method: string, url: URL, workerId: string | null, body: Buffer): string {
  const params = [...url.searchParams].sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0));
  return createHash('sha256')
    .update(`${method} ${url.pathname}\n${JSON.stringify(params)}\n${workerId ?? ''}\n`)
    .update(body)
    .digest('hex');
}

interface Stored {
  fingerprint: string;
  /** Human-readable form of the call, for the 422 message. */
  call: string;
  reply: Reply;
  requestId: string;
  storedAtMs: number;
}

export type Lookup = { kind: 'replay'; reply: Reply; originalRequestId: string } | { kind: 'mismatch'; error: EmulatorError } | null;

/** Keys kept for `ttlMs` after their first use, at most `maxKeys` of them (the oldest go first). */
export class IdempotencyKeys {
  private readonly keys = new Map<string, Stored>();

  constructor(private readonly limits: () => { ttlMs: number; maxKeys: number }) {}

  get size(): number {
    return this.keys.size;
  }

  lookup(key: string, fingerprint: string, call: string, nowMs: number): Lookup {
    this.expire(nowMs);
    const seen = this.keys.get(key);
    if (seen === undefined) return null;
    if (seen.fingerprint === fingerprint) {
      return { kind: 'replay', reply: { ...seen.reply, headers: { ...seen.reply.headers, [REPLAYED_HEADER]: 'true' } }, originalRequestId: seen.requestId };
    }
    return {
      kind: 'mismatch',
      error: new EmulatorError(
        422,
        'invalid_request_error',
        `Idempotency-Key ${key} was already used for a different call (${seen.call}); reuse a key only to retry the same call (same method, path, parameters, Worker-ID and body), use a new key for a new call`,
      ),
    };
  }

  /** Stores the reply of a call that was applied (or refused on its merits): its retries get this reply. */
  remember(key: string, fingerprint: string, call: string, reply: Reply, requestId: string, nowMs: number): void {
    this.expire(nowMs);
    this.keys.delete(key);
    this.keys.set(key, { fingerprint, call, reply, requestId, storedAtMs: nowMs });
    const { maxKeys } = this.limits();
    for (const oldest of this.keys.keys()) {
      if (this.keys.size <= maxKeys) break;
      this.keys.delete(oldest);
    }
  }

  clear(): void {
    this.keys.clear();
  }

  /** Insertion order is age order, so expiry stops at the first key still young enough. */
  private expire(nowMs: number): void {
    const { ttlMs } = this.limits();
    for (const [key, s] of this.keys) {
      if (nowMs - s.storedAtMs < ttlMs) break;
      this.keys.delete(key);
    }
  }
}
