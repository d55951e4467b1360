import type { WorkItem } from '../api/types.js';

/** The work endpoints, as named in fault specs and `*_rejected` events. */
export type WorkEndpoint = 'poll' | 'ack' | 'heartbeat' | 'get' | 'update_metadata' | 'stop' | 'list' | 'stats';
export const WORK_ENDPOINTS: readonly WorkEndpoint[] = [
  'poll',
  'ack',
  'heartbeat',
  'get',
  'update_metadata',
  'stop',
  'list',
  'stats',
];

export type EnvironmentType = 'self_hosted' | 'cloud';

/** Runtime settings, changeable through `POST /_admin/settings` or `Emulator.setSettings`. */
export interface EmulatorSettings {
  /** Grant exactly this ttl (positive integer, may be below 10) instead of clamping to 10..600; null = clamp. */
  ttl_override_seconds: number | null;
  /** `reclaim_older_than_ms` when a poll does not send one (and the window `stats.pending` uses). */
  reclaim_default_ms: number;
  /** An item `starting` (acked, no heartbeat) longer than this goes back to `queued`. */
  starting_timeout_ms: number;
  /** `cloud` makes every work endpoint answer 400 "environment is not self_hosted". */
  environment_type: EnvironmentType;
  /** Ttl asked for when a heartbeat omits `desired_ttl_seconds` (then clamped or overridden as usual). */
  default_ttl_seconds: number;
  /** How long an Idempotency-Key is remembered after its first use. */
  idempotency_ttl_ms: number;
  /** At most this many keys are remembered; the oldest are forgotten first. */
  idempotency_max_keys: number;
}

export interface EmulatorOptions {
  host?: string;
  port?: number;
  token?: string;
  environmentId?: string;
  environmentType?: EnvironmentType;
  ttlOverrideSeconds?: number | null;
  /** Each event as one JSON line (the event itself as the second argument). */
  log?: (line: string, event: EmulatorEvent) => void;
}

/** A lease as the admin view shows it. */
export interface AdminLease {
  holder_worker_id: string | null;
  /** Increments each time a new lease begins (first heartbeat, takeover) anywhere in the emulator. */
  epoch: number;
  last_heartbeat: string;
  ttl_seconds: number;
  /** Date.now()-style ms after which the lease is expired. */
  expires_at_ms: number;
  heartbeats: number;
}

export interface AdminItem extends WorkItem {
  lease: AdminLease | null;
  delivery: { worker_id: string | null; delivered_at_ms: number; reclaim_after_ms: number } | null;
  acked_by: string | null;
}

/**
 * One entry of the event log. `t_ms` is Date.now() when it happened, `at` the same as ISO.
 * Everything else depends on `type` (see docs/emulator.md).
 */
export interface EmulatorEvent {
  seq: number;
  t_ms: number;
  at: string;
  type: string;
  work_id?: string;
  worker_id?: string | null;
  request_id?: string;
  status?: number;
  [detail: string]: unknown;
}

/** A refusal: becomes the error envelope over HTTP, a thrown error in process. */
export class EmulatorError extends Error {
  override readonly name = 'EmulatorError';
  constructor(
    readonly status: number,
    readonly errorType: string,
    message: string,
  ) {
    super(message);
  }
}

export const badRequest = (message: string) => new EmulatorError(400, 'invalid_request_error', message);
export const notFound = (message: string) => new EmulatorError(404, 'not_found_error', message);
export const conflict = (message: string) => new EmulatorError(409, 'invalid_request_error', message);
export const preconditionFailed = (message: string) => new EmulatorError(412, 'precondition_failed_error', message);

/** Who is calling: carried into the events an operation logs. */
export interface CallContext {
  requestId?: string;
  workerId?: string | null;
  /** 'api' for the work API, 'admin' for the admin API and in-process calls. */
  by?: 'api' | 'admin';
}
