/** Wire shapes of the Qoder self-hosted work API (see shared/reference/qoder-work-api.md §2). */

export type WorkState = 'queued' | 'starting' | 'active' | 'stopping' | 'stopped';
export const WORK_STATES: readonly WorkState[] = ['queued', 'starting', 'active', 'stopping', 'stopped'];

/** A work item (`type: "work"`), validated at the edge before anything uses it. */
export interface WorkItem {
  id: string; // work_…
  type: 'work';
  environment_id: string; // env_…
  data: { type: string; id: string } & Record<string, unknown>;
  state: WorkState;
  created_at: string;
  acknowledged_at: string | null;
  started_at: string | null;
  latest_heartbeat_at: string | null;
  stop_requested_at: string | null;
  stopped_at: string | null;
  metadata: Record<string, string>;
}

/** Reply to POST …/heartbeat (`type: "work_heartbeat"`). */
export interface WorkHeartbeat {
  type: 'work_heartbeat';
  /** Exactly the string the server sent: echoed byte for byte as the next precondition. */
  last_heartbeat: string;
  lease_extended: boolean;
  state: WorkState;
  ttl_seconds: number;
}

/** The precondition of the first heartbeat. */
export const NO_HEARTBEAT = 'NO_HEARTBEAT';

/** Every successful call returns the parsed value plus the request id used for it (ours or the server's). */
export interface Reply<T> {
  value: T;
  status: number;
  requestId: string;
}

/** Reply to GET …/work/stats (`type: "work_queue_stats"`). */
export interface WorkQueueStats {
  type: 'work_queue_stats';
  depth: number;
  pending: number;
  oldest_queued_at: string | null;
  workers_polling: number;
}
