import { isoMs } from './clock.js';
import type { EmulatorEvent } from './types.js';

/** The event types the emulator logs (see docs/emulator.md for the fields of each). */
export const EVENT_TYPES = [
  // work API, accepted
  'queued',
  'poll_delivered',
  'poll_empty',
  'ack',
  'heartbeat_accepted',
  'heartbeat_not_extended',
  'stop_requested',
  'stopped',
  'stop_unchanged',
  'metadata_updated',
  'get',
  'list',
  'stats',
  // work API, refused: `<endpoint>_rejected` with status and error_type
  'poll_rejected',
  'ack_rejected',
  'heartbeat_rejected',
  'get_rejected',
  'update_metadata_rejected',
  'stop_rejected',
  'list_rejected',
  'stats_rejected',
  'request_rejected',
  // a POST whose Idempotency-Key was seen before on the same call: the stored reply again, nothing applied
  'replayed',
  // the emulator itself
  'lease_expired',
  'takeover',
  'fault_injected',
  'fault_added',
  'faults_cleared',
  'settings_changed',
  'tokens_changed',
  'reset',
] as const;

/** An event before the log numbers it; `t_ms` defaults to now. */
export interface EventInput {
  type: string;
  t_ms?: number;
  work_id?: string | undefined;
  worker_id?: string | null | undefined;
  request_id?: string | undefined;
  status?: number | undefined;
  [detail: string]: unknown;
}

/** Keeps this many events; older ones are dropped (seq numbers keep counting). */
export const MAX_EVENTS = 200_000;

export class EventLog {
  private readonly entries: EmulatorEvent[] = [];
  private nextSeq = 1;
  private readonly listeners = new Set<(e: EmulatorEvent) => void>();

  constructor(private readonly nowMs: () => number) {}

  /** Appends one event; `t_ms` defaults to now. Undefined fields are left out. */
  append(input: EventInput): EmulatorEvent {
    const t = input.t_ms ?? this.nowMs();
    const event: EmulatorEvent = { seq: this.nextSeq++, t_ms: t, at: isoMs(t), type: input.type };
    for (const [k, v] of Object.entries(input)) {
      if (k !== 't_ms' && k !== 'type' && v !== undefined) event[k] = v;
    }
    this.entries.push(event);
    if (this.entries.length > MAX_EVENTS) this.entries.splice(0, this.entries.length - MAX_EVENTS);
    for (const l of this.listeners) {
      try {
        l(event);
      } catch {
        // a listener's failure is its own business
      }
    }
    return event;
  }

  /** Events with seq > since (all when since is 0), oldest first; copies. */
  since(since = 0): EmulatorEvent[] {
    const out: EmulatorEvent[] = [];
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i]!;
      if (e.seq <= since) break;
      out.push(e);
    }
    return out.reverse().map((e) => ({ ...e }));
  }

  /** The seq the next event will get minus one (0 before any). */
  get lastSeq(): number {
    return this.nextSeq - 1;
  }

  subscribe(listener: (e: EmulatorEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  clear(): void {
    this.entries.length = 0;
  }
}
