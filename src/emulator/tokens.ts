import { createHash } from 'node:crypto';
import { badRequest } from './types.js';

/** How a token shows in the admin API and the event log: never the token itself, which stays out of logs. */
export function tokenFingerprint(token: string): string {
  return `sha256:${createHash('sha256').update(token).digest('hex').slice(0, 12)}`;
}

export interface AdminToken {
  fingerprint: string;
  /** Work API calls that presented this token (accepted by the token check) since it was accepted. */
  calls: number;
  /** Date.now()-style ms of the last such call, null before one. */
  last_used_ms: number | null;
}

export interface TokenView {
  accepted: AdminToken[];
  /** Fingerprints of revoked tokens: a call presenting one gets 401 "revoked bearer token". */
  revoked: string[];
}

const MAX_TOKEN_LENGTH = 8192;

/**
 * The bearer tokens the work API accepts, for rotation by hand: accept a new one, then revoke the old, and a
 * keeper that re-reads its token source carries on. Starts with the token given at start-up.
 */
export class TokenRegistry {
  private readonly accepted = new Map<string, { calls: number; lastUsedMs: number | null }>();
  private readonly revoked = new Set<string>();

  constructor(private readonly initial: string) {
    this.reset();
  }

  /** 'ok', or why the call is refused. Counts the call against the token. */
  check(token: string, nowMs: number): 'ok' | 'revoked' | 'invalid' {
    const entry = this.accepted.get(token);
    if (entry) {
      entry.calls += 1;
      entry.lastUsedMs = nowMs;
      return 'ok';
    }
    return this.revoked.has(token) ? 'revoked' : 'invalid';
  }

  /** Applies `{accept?: string[], revoke?: string[]}`: accepts first, then revokes (a token in both ends revoked). */
  change(input: unknown): { accepted: string[]; revoked: string[] } {
    if (typeof input !== 'object' || input === null || Array.isArray(input)) throw badRequest('the body must be an object {accept?, revoke?}');
    const body = input as Record<string, unknown>;
    for (const k of Object.keys(body)) if (k !== 'accept' && k !== 'revoke') throw badRequest(`unknown field ${k}; use accept and revoke`);
    const accept = tokenList(body.accept, 'accept');
    const revoke = tokenList(body.revoke, 'revoke');
    for (const t of accept) {
      this.revoked.delete(t);
      if (!this.accepted.has(t)) this.accepted.set(t, { calls: 0, lastUsedMs: null });
    }
    for (const t of revoke) {
      this.accepted.delete(t);
      this.revoked.add(t);
    }
    return { accepted: accept.map(tokenFingerprint), revoked: revoke.map(tokenFingerprint) };
  }

  view(): TokenView {
    return {
      accepted: [...this.accepted].map(([t, e]) => ({ fingerprint: tokenFingerprint(t), calls: e.calls, last_used_ms: e.lastUsedMs })),
      revoked: [...this.revoked].map(tokenFingerprint),
    };
  }

  /** Only the start-up token, no revocations. */
  reset(): void {
    this.accepted.clear();
    this.revoked.clear();
    this.accepted.set(this.initial, { calls: 0, lastUsedMs: null });
  }
}

function tokenList(v: unknown, name: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw badRequest(`${name} must be an array of tokens`);
  return v.map((t) => {
    if (typeof t !== 'string' || t === '' || t.length > MAX_TOKEN_LENGTH || !/^[\x21-\x7e]+$/.test(t)) {
      throw badRequest(`${name}: each token must be 1 to ${MAX_TOKEN_LENGTH} visible ASCII characters`);
    }
    return t;
  });
}
