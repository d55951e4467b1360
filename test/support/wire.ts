/** Wire-shaped replies of the work API for tests: valid by default, any field overridable. */

export const wireItem = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  id: 'work_01',
  type: 'work',
  environment_id: 'env_01',
  data: { type: 'session', id: 'sess_01' },
  state: 'queued',
  created_at: '2026-07-01T08:15:06.120394Z',
  acknowledged_at: null,
  started_at: null,
  latest_heartbeat_at: null,
  stop_requested_at: null,
  stopped_at: null,
  metadata: {},
  ...over,
});

export const wireBeat = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  type: 'work_heartbeat',
  last_heartbeat: '2026-07-01T08:15:06.120394Z',
  lease_extended: true,
  state: 'active',
  ttl_seconds: 60,
  ...over,
});
