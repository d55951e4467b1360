// The bare work-API calls of the baseline and floor loops: an undici Pool, the keeper's headers (bearer
// token, a fresh x-request-id per call, an Idempotency-Key per heartbeat), the reply parsed as JSON.
// No retries, no timeouts, no validation, no logging: what any correct client must do at least.
import { randomUUID } from 'node:crypto';
import { Pool } from 'undici';

export interface BareItem {
  id: string;
}

export interface BareHeartbeat {
  last_heartbeat: string;
  state: string;
}

export class BareApi {
  private readonly pool: Pool;
  private readonly base: string;
  private readonly headers: Record<string, string>;

  constructor(url: string, token: string, environmentId: string, readonly workerId: string) {
    this.pool = new Pool(url, { headersTimeout: 0, bodyTimeout: 0 });
    this.base = `/api/v1/cloud/environments/${environmentId}/work`;
    this.headers = { authorization: `Bearer ${token}`, 'user-agent': `bench-bare (node ${process.version})`, accept: 'application/json' };
  }

  async call<T>(method: 'GET' | 'POST', path: string, extra: Record<string, string> = {}, body?: string): Promise<T> {
    const headers = { ...this.headers, 'x-request-id': randomUUID(), ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...extra };
    // The one retry any client needs: a keep-alive connection the server closed as the call went out
    // (its keepAliveTimeout). The same headers, so the same Idempotency-Key.
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await this.pool.request({ path: this.base + path, method, headers, ...(body === undefined ? {} : { body }) });
        const reply: unknown = await res.body.json();
        if (res.statusCode >= 300) throw new Error(`${method} ${path}: ${res.statusCode} ${JSON.stringify(reply)}`);
        return reply as T;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (attempt >= 3 || (code !== 'UND_ERR_SOCKET' && code !== 'ECONNRESET')) throw err;
      }
    }
  }

  poll(blockMs: number): Promise<BareItem | null> {
    return this.call('GET', `/poll?block_ms=${blockMs}`, { 'worker-id': this.workerId });
  }

  ack(id: string): Promise<unknown> {
    return this.call('POST', `/${id}/ack`, { 'worker-id': this.workerId });
  }

  heartbeat(id: string, expected: string): Promise<BareHeartbeat> {
    return this.call('POST', `/${id}/heartbeat?expected_last_heartbeat=${encodeURIComponent(expected)}&desired_ttl_seconds=60`, { 'idempotency-key': randomUUID() });
  }

  /** The keeper's report: the outcome into the metadata, then stop (and confirm when it answered `stopping`). */
  async report(id: string, metadata: Record<string, string>): Promise<void> {
    await this.call('POST', `/${id}`, {}, JSON.stringify({ metadata }));
    const first = await this.call<{ state: string }>('POST', `/${id}/stop`, {}, '{}');
    if (first.state === 'stopping') await this.call('POST', `/${id}/stop`, {}, '{}');
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

/** Lines from the driver on stdin, one at a time. */
export function stdinLines(): () => Promise<string> {
  const waiting: ((l: string) => void)[] = [];
  const ready: string[] = [];
  let buf = '';
  process.stdin.on('data', (c: Buffer) => {
    buf += c.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      const w = waiting.shift();
      if (w) w(line);
      else ready.push(line);
    }
  });
  return () => {
    const l = ready.shift();
    return l !== undefined ? Promise.resolve(l) : new Promise((r) => waiting.push(r));
  };
}

export const say = (o: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

/** Stay alive (for the driver's last /proc reading) until killed. */
export const stayUntilKilled = (): void => void setInterval(() => {}, 60_000);
