import { WORK_ENDPOINTS, badRequest, type WorkEndpoint } from './types.js';

export type FaultKind = 'latency' | 'status' | 'rate_limit' | 'reset' | 'hang' | 'drop_reply' | 'not_extended' | 'malformed';
export const FAULT_KINDS: readonly FaultKind[] = ['latency', 'status', 'rate_limit', 'reset', 'hang', 'drop_reply', 'not_extended', 'malformed'];

/** What `POST /_admin/faults` takes (and `Emulator.injectFault`). */
export interface FaultSpec {
  endpoint: WorkEndpoint | '*';
  kind: FaultKind;
  /** How many matching requests it hits (default 1); 0 = every one until cleared. */
  times?: number;
  /** Only requests for this work item. */
  work_id?: string;
  /** latency: delay before normal handling (required). */
  latency_ms?: number;
  /** status: HTTP status of the error reply (400..599, default 500). */
  status?: number;
  /** rate_limit: the Retry-After header, seconds (default 1). */
  retry_after_s?: number;
  /** malformed: the raw 200 body (default `{"type":`). */
  body?: string;
}

export interface Fault extends Required<Pick<FaultSpec, 'endpoint' | 'kind' | 'times'>> {
  id: string;
  work_id?: string;
  latency_ms?: number;
  status?: number;
  retry_after_s?: number;
  body?: string;
  /** Hits left (null = unlimited). */
  remaining: number | null;
  fired: number;
}

const isInt = (v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): v is number =>
  typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;

/** Validates an untrusted spec (400 with the reason), filling defaults. */
export function parseFaultSpec(input: unknown): Omit<Fault, 'id' | 'remaining' | 'fired'> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw badRequest('fault must be an object');
  const s = input as Record<string, unknown>;
  const endpoint = s.endpoint;
  if (endpoint !== '*' && !WORK_ENDPOINTS.includes(endpoint as WorkEndpoint)) {
    throw badRequest(`endpoint must be one of ${[...WORK_ENDPOINTS, '*'].join(', ')}`);
  }
  const kind = s.kind as FaultKind;
  if (!FAULT_KINDS.includes(kind)) throw badRequest(`kind must be one of ${FAULT_KINDS.join(', ')}`);
  const times = s.times ?? 1;
  if (!isInt(times, 0)) throw badRequest('times must be an integer >= 0 (0 = until cleared)');
  if (s.work_id !== undefined && typeof s.work_id !== 'string') throw badRequest('work_id must be a string');
  const fault: Omit<Fault, 'id' | 'remaining' | 'fired'> = { endpoint: endpoint as WorkEndpoint | '*', kind, times };
  if (s.work_id !== undefined) fault.work_id = s.work_id as string;
  switch (kind) {
    case 'latency':
      if (!isInt(s.latency_ms, 0, 600_000)) throw badRequest('latency needs latency_ms, an integer 0..600000');
      fault.latency_ms = s.latency_ms;
      break;
    case 'status': {
      const status = s.status ?? 500;
      if (!isInt(status, 400, 599)) throw badRequest('status must be an integer 400..599');
      fault.status = status;
      break;
    }
    case 'rate_limit': {
      const ra = s.retry_after_s ?? 1;
      if (!isInt(ra, 0, 86_400)) throw badRequest('retry_after_s must be an integer 0..86400');
      fault.retry_after_s = ra;
      break;
    }
    case 'not_extended':
      if (endpoint !== 'heartbeat' && endpoint !== '*') throw badRequest('not_extended applies to the heartbeat endpoint only');
      break;
    case 'malformed': {
      const body = s.body ?? '{"type":';
      if (typeof body !== 'string') throw badRequest('body must be a string');
      fault.body = body;
      break;
    }
    default:
      break;
  }
  return fault;
}

/** The active faults, first added first matched. */
export class FaultRegistry {
  private faults: Fault[] = [];
  private nextId = 1;

  add(input: unknown): Fault {
    const f: Fault = { ...parseFaultSpec(input), id: `fault_${this.nextId++}`, remaining: null, fired: 0 };
    f.remaining = f.times === 0 ? null : f.times;
    this.faults.push(f);
    return { ...f };
  }

  /** Consumes one hit of the first fault matching this request, if any. */
  take(endpoint: WorkEndpoint, workId: string | undefined): Fault | undefined {
    const f = this.faults.find(
      (x) =>
        (x.endpoint === '*' || x.endpoint === endpoint) &&
        (x.work_id === undefined || x.work_id === workId) &&
        (x.kind !== 'not_extended' || endpoint === 'heartbeat'),
    );
    if (!f) return undefined;
    f.fired++;
    if (f.remaining !== null) {
      f.remaining--;
      if (f.remaining <= 0) this.faults = this.faults.filter((x) => x !== f);
    }
    return { ...f };
  }

  list(): Fault[] {
    return this.faults.map((f) => ({ ...f }));
  }

  remove(id: string): boolean {
    const before = this.faults.length;
    this.faults = this.faults.filter((f) => f.id !== id);
    return this.faults.length < before;
  }

  clear(): number {
    const n = this.faults.length;
    this.faults = [];
    return n;
  }
}
