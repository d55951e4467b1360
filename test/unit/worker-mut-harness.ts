/**
 * Shared by the worker-mut-* tests: a logger whose lines the test reads, the events metrics subscribe to
 * as strings, and the fake control plane (test/support/fake-worker.ts) recording every argument of every
 * call, with scripted answers for the report's calls and the poll's options.
 */
import pino from 'pino';
import type { CallOptions } from '../../src/api/client.js';
import type { Reply, WorkHeartbeat, WorkItem } from '../../src/api/types.js';
import type { Logger } from '../../src/observe/logger.js';
import type { KeeperEvents } from '../../src/observe/snapshot.js';
import { onAbort } from '../../src/api/cancel.js';
import { TransientError } from '../../src/api/errors.js';
import { FakeApi, deferred } from '../support/fake-worker.js';
import { wireItem } from '../support/wire.js';

export type Line = Record<string, unknown> & { level: number; msg: string };
export const LEVEL = { debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const;

/** A pino logger whose lines the test reads (every level). */
export function captureLog(): { log: Logger; lines: Line[]; named: (msg: string) => Line[] } {
  const lines: Line[] = [];
  const log = pino({ level: 'trace', base: undefined, timestamp: false }, { write: (s: string) => void lines.push(JSON.parse(s) as Line) }) as Logger;
  return { log, lines, named: (msg) => lines.filter((l) => l.msg === msg || l.msg.startsWith(`${msg}:`)) };
}

/** The events metrics subscribe to, as strings in order. */
export function recordEvents(): { events: KeeperEvents; seen: string[]; usage: unknown[] } {
  const seen: string[] = [];
  const usage: unknown[] = [];
  return {
    seen,
    usage,
    events: {
      heartbeat: (r, ms) => seen.push(`heartbeat:${r}:${ms}`),
      poll: (r) => seen.push(`poll:${r}`),
      outcome: (o) => seen.push(`outcome:${o}`),
      fence: (s) => seen.push(`fence:${s}`),
      jobUsage: (u) => usage.push(u),
    },
  };
}

/** The fake control plane, recording every argument, with scripted answers for the report's calls. */
export class ScriptedApi extends FakeApi {
  readonly heartbeatCalls: { workId: string; params: Record<string, unknown>; opts: CallOptions }[] = [];
  readonly metadataCalls: { workId: string; metadata: Record<string, string | null>; opts: CallOptions; at: number }[] = [];
  readonly stopCalls: { workId: string; opts: CallOptions; at: number }[] = [];
  /** One per metadata call, in order: an error rejects it; when empty, calls succeed. */
  metadataAnswers: unknown[] = [];
  /** One per stop call: the state the item is in after it, or an error; when empty, `stopped`. */
  stopAnswers: (string | Error)[] = [];
  /** Held back until the test resolves it: the next stop call waits for this. */
  stopGate: Promise<void> | null = null;

  override heartbeat(workId: string, p: { expectedLastHeartbeat: string; idempotencyKey: string }, opts: CallOptions = {}): Promise<Reply<WorkHeartbeat>> {
    this.heartbeatCalls.push({ workId, params: { ...p }, opts });
    return super.heartbeat(workId, p, opts);
  }

  override updateMetadata(workId: string, metadata: Record<string, string | null>, opts: CallOptions = {}): Promise<Reply<WorkItem>> {
    this.metadataCalls.push({ workId, metadata, opts, at: Date.now() });
    const answer = this.metadataAnswers.shift();
    if (answer !== undefined) return Promise.reject(answer);
    return super.updateMetadata(workId, metadata);
  }

  override async stop(workId: string, _p: unknown = {}, opts: CallOptions = {}): Promise<Reply<WorkItem>> {
    this.stopCalls.push({ workId, opts, at: Date.now() });
    this.stops.push(workId);
    if (this.stopGate) await this.stopGate;
    const answer = this.stopAnswers.shift() ?? 'stopped';
    if (answer instanceof Error) throw answer;
    return { value: wireItem({ id: workId, state: answer }) as unknown as WorkItem, requestId: `req-stop-${this.stopCalls.length}`, status: 200 };
  }

  /** An accepted reply with its own request id and ttl. */
  grant(over: { state?: 'active' | 'stopping'; ttl?: number; extended?: boolean; requestId?: string } = {}): Reply<WorkHeartbeat> {
    const r = this.accepted(over.state ?? 'active');
    return {
      ...r,
      requestId: over.requestId ?? r.requestId,
      value: { ...r.value, ttl_seconds: over.ttl ?? r.value.ttl_seconds, lease_extended: over.extended ?? true },
    };
  }
}


/** ScriptedApi plus the poll's and the ack's arguments, and poll/ack answers the test scripts. */
export class ClaimApi extends ScriptedApi {
  readonly pollCalls: { params: Record<string, unknown>; opts: CallOptions; at: number }[] = [];
  readonly ackCalls: { workId: string; params: Record<string, unknown>; opts: CallOptions; at: number }[] = [];
  /** One per ack call: an error rejects it; when empty, the usual (auto or by hand). */
  ackAnswers: unknown[] = [];
  /** One per poll call: an error rejects it, null answers empty at once; when empty, the usual queue. */
  pollAnswers: (Error | null)[] = [];
  /** When set, every ack waits for it, whatever its signal does (a reply already on its way). */
  ackGate: Promise<Reply<WorkItem>> | null = null;

  /** Answer a poll on an empty queue with null after its blockMs, as the server's long poll does (else it waits for work). */
  longPoll = false;

  override poll(p: unknown, opts: CallOptions = {}): Promise<Reply<WorkItem | null>> {
    this.pollCalls.push({ params: { ...(p as Record<string, unknown>) }, opts, at: Date.now() });
    if (this.pollAnswers.length > 0) {
      const a = this.pollAnswers.shift()!;
      return a === null ? Promise.resolve({ value: null, requestId: 'req-empty', status: 200 }) : Promise.reject(a);
    }
    if (this.longPoll && this.auto.poll && this.queue.length === 0) {
      const answer = deferred<Reply<WorkItem | null>>();
      this.polls.push({ answer });
      const timer = setTimeout(() => answer.resolve({ value: null, requestId: 'req-empty', status: 200 }), (p as { blockMs: number }).blockMs);
      if (opts.signal) {
        onAbort(opts.signal, () => {
          clearTimeout(timer);
          if (!answer.settled) answer.reject(new TransientError('poll aborted'));
        });
      }
      return answer.promise;
    }
    return super.poll(p, opts);
  }

  override ack(workId: string, p: unknown, opts: CallOptions = {}): Promise<Reply<WorkItem>> {
    this.ackCalls.push({ workId, params: { ...(p as Record<string, unknown>) }, opts, at: Date.now() });
    if (this.ackAnswers.length > 0) return Promise.reject(this.ackAnswers.shift());
    if (this.ackGate) return this.ackGate;
    return super.ack(workId, p, opts);
  }
}
