/**
 * A scenario's plan: a pure function of its seed. Which keepers (concurrency, grace, on-shutdown), which
 * items (what the job does), and which faults at which moment. The plan is replayed exactly by the same
 * seed; the interleaving with real processes and sockets is not (that is the point of running many).
 */
import type { FaultSpec } from '../../../src/emulator/index.js';
import type { JobMode } from './job.js';
import { Rng } from './prng.js';

export interface KeeperSpec {
  /** k0, k1, ... ("s" for the calm-phase keeper); the incarnation is appended at start (k0.1). */
  tag: string;
  workerId: string;
  concurrency: number;
  graceS: number;
  onShutdown: 'stop' | 'release';
}

export interface ItemSpec {
  mode: JobMode;
  durMs: number;
  exitCode: number;
  drainMs: number;
}

/** Server-side faults, named as in the summary table. */
export type ServerFault =
  | 'latency_spike'
  | 'http_5xx'
  | 'http_429'
  | 'reset'
  | 'hang'
  | 'drop_reply'
  | 'not_extended'
  | 'malformed'
  | 'spurious_412_409';

export type Action =
  | { kind: 'server_fault'; name: ServerFault; spec: FaultSpec; targetItem: boolean }
  /** Every endpoint resets (or hangs) until `ms` have passed: the control plane is down. */
  | { kind: 'outage'; mode: 'reset' | 'hang'; ms: number }
  | { kind: 'takeover' }
  | { kind: 'stop_graceful' }
  | { kind: 'stop_forced' }
  | { kind: 'keeper_sigterm'; keeper: number }
  /** SIGKILL; systemd's Restart= brings it back after `restartAfterMs` (same worker id), or never. */
  | { kind: 'keeper_sigkill'; keeper: number; restartAfterMs: number | null }
  | { kind: 'keeper_double_sigterm'; keeper: number; gapMs: number };

export interface TimedAction {
  atMs: number;
  action: Action;
}

export interface Plan {
  seed: number;
  /** The ttl the emulator grants (admin override), seconds. */
  ttlS: number;
  keepers: KeeperSpec[];
  /** Queued at the start. */
  items: ItemSpec[];
  /** Queued one by one during the chaos phase, whenever fewer than `inFlight` items are not stopped. */
  reserve: ItemSpec[];
  inFlight: number;
  /**
   * What happens to a SIGKILLed keeper's jobs. `killmode`: the harness SIGKILLs every process left from
   * that keeper, as systemd does to the unit's cgroup (KillMode=mixed). `pdeathsig`: nothing but the
   * kernel's parent-death signal, which reaches the job's leader only, so such scenarios have no job
   * that forks or daemonizes (a grandchild would survive: the documented limit).
   */
  killVariant: 'killmode' | 'pdeathsig';
  /** Length of the chaos phase (faults on), ms. */
  chaosMs: number;
  actions: TimedAction[];
}

export const SERVER_FAULTS: readonly ServerFault[] = [
  'latency_spike',
  'http_5xx',
  'http_429',
  'reset',
  'hang',
  'drop_reply',
  'not_extended',
  'malformed',
  'spurious_412_409',
];

export const HARNESS_FAULTS = [
  'outage',
  'takeover',
  'stop_graceful',
  'stop_forced',
  'keeper_sigterm',
  'keeper_sigkill',
  'keeper_restart',
  'keeper_double_sigterm',
] as const;

export const JOB_KINDS = ['job_ignores_sigterm', 'job_forks_grandchild', 'job_escapes_setsid', 'job_slow_drain', 'job_exits_nonzero'] as const;

type Endpoint = FaultSpec['endpoint'];

const MALFORMED_BODIES = [
  '{"type":',
  'not json',
  '{}',
  '[]',
  '"work"',
  '{"type":"work_heartbeat","last_heartbeat":"yesterday","lease_extended":true,"state":"active","ttl_seconds":2}',
  '{"type":"work_heartbeat","last_heartbeat":"2026-07-01T08:15:06.120394Z","lease_extended":"yes","state":"active","ttl_seconds":2}',
  '{"type":"work","id":"work_../../x","environment_id":"env_x"}',
];

export function drawItem(r: Rng, killVariant: Plan['killVariant']): ItemSpec {
  const modes: [JobMode, number][] = [
    ['run', 45],
    ['ignore', 20],
    ['slow', 20],
    ['fork', killVariant === 'pdeathsig' ? 0 : 15],
    // A setsid daemon outlives a SIGKILLed keeper outside systemd until the next keeper's sweep: like
    // fork, only where the harness plays systemd's KillMode.
    ['escape', killVariant === 'pdeathsig' ? 0 : 10],
  ];
  return {
    mode: r.weighted(modes),
    durMs: r.int(500, 3000),
    exitCode: r.chance(0.8) ? 0 : r.pick([1, 3, 42]),
    drainMs: r.int(100, 800),
  };
}

/** One fault, drawn with the weights below. `keepers` is how many keepers the plan starts. */
export function drawAction(r: Rng, ttlS: number, keepers: number): Action {
  const ttlMs = ttlS * 1000;
  const kind = r.weighted([
    ['server', 62],
    ['outage', 5],
    ['takeover', 9],
    ['stop_graceful', 6],
    ['stop_forced', 5],
    ['keeper_sigterm', 5],
    ['keeper_sigkill', 6],
    ['keeper_double_sigterm', 2],
  ] as const);
  switch (kind) {
    case 'outage':
      return { kind: 'outage', mode: r.pick(['reset', 'hang'] as const), ms: r.int(300, Math.round(ttlMs * 1.5)) };
    case 'takeover':
    case 'stop_graceful':
    case 'stop_forced':
      return { kind };
    case 'keeper_sigterm':
      return { kind, keeper: r.int(0, keepers - 1) };
    case 'keeper_sigkill':
      return { kind, keeper: r.int(0, keepers - 1), restartAfterMs: r.chance(0.5) ? r.int(200, 1000) : null };
    case 'keeper_double_sigterm':
      return { kind, keeper: r.int(0, keepers - 1), gapMs: r.int(30, 400) };
    case 'server':
      break;
  }
  const name = r.weighted<ServerFault>([
    ['latency_spike', 14],
    ['http_5xx', 14],
    ['http_429', 8],
    ['reset', 10],
    ['hang', 8],
    ['drop_reply', 12],
    ['not_extended', 6],
    ['malformed', 8],
    ['spurious_412_409', 4],
  ]);
  const anyEndpoint = (): Endpoint =>
    r.weighted<Endpoint>([
      ['heartbeat', 6],
      ['poll', 2],
      ['ack', 2],
      ['stop', 2],
      ['update_metadata', 1],
      ['*', 2],
    ]);
  let spec: FaultSpec;
  switch (name) {
    case 'latency_spike':
      // Above the heartbeat interval (a third of the ttl), below the ttl.
      spec = {
        endpoint: r.weighted<Endpoint>([
          ['heartbeat', 6],
          ['poll', 1],
          ['ack', 1],
          ['stop', 1],
          ['update_metadata', 1],
        ]),
        kind: 'latency',
        latency_ms: r.int(Math.round(ttlMs * 0.4), Math.round(ttlMs * 0.95)),
        times: r.int(1, 3),
      };
      break;
    case 'http_5xx':
      spec = { endpoint: anyEndpoint(), kind: 'status', status: r.pick([500, 502, 503, 504]), times: r.int(1, 4) };
      break;
    case 'http_429':
      spec = { endpoint: anyEndpoint(), kind: 'rate_limit', retry_after_s: r.pick([0, 0, 1]), times: r.int(1, 3) };
      break;
    case 'reset':
      spec = { endpoint: anyEndpoint(), kind: 'reset', times: r.int(1, 3) };
      break;
    case 'hang':
      // Not on stop/update_metadata: those calls wait 10 s per attempt by design, which only slows the suite.
      spec = {
        endpoint: r.weighted<Endpoint>([
          ['heartbeat', 4],
          ['poll', 1],
          ['ack', 1],
        ]),
        kind: 'hang',
        times: 1,
      };
      break;
    case 'drop_reply':
      spec = {
        endpoint: r.weighted<Endpoint>([
          ['heartbeat', 5],
          ['ack', 2],
          ['stop', 2],
          ['update_metadata', 1],
          ['poll', 1],
        ]),
        kind: 'drop_reply',
        times: 1,
      };
      break;
    case 'not_extended':
      spec = { endpoint: 'heartbeat', kind: 'not_extended', times: 1 };
      break;
    case 'malformed':
      spec = {
        endpoint: r.weighted<Endpoint>([
          ['heartbeat', 3],
          ['poll', 1],
          ['ack', 1],
          ['stop', 1],
          ['update_metadata', 1],
        ]),
        kind: 'malformed',
        body: r.pick(MALFORMED_BODIES),
        times: r.int(1, 2),
      };
      break;
    case 'spurious_412_409':
      spec = { endpoint: 'heartbeat', kind: 'status', status: r.pick([412, 409]), times: 1 };
      break;
  }
  // poll has no work id in its path: a fault narrowed to one item would never match it.
  return { kind: 'server_fault', name, spec, targetItem: spec.endpoint !== '*' && spec.endpoint !== 'poll' && r.chance(0.5) };
}

export interface PlanOptions {
  /** Range of chaos-phase lengths, ms. */
  chaosMs?: [number, number];
}

export function drawPlan(seed: number, opts: PlanOptions = {}): Plan {
  const r = new Rng(seed);
  const ttlS = r.pick([1, 2, 2]);
  const nKeepers = r.chance(0.65) ? 2 : 3;
  const keepers: KeeperSpec[] = [];
  for (let i = 0; i < nKeepers; i++) {
    keepers.push({
      tag: `k${i}`,
      workerId: `chaos-${seed}-k${i}`,
      concurrency: r.pick([1, 1, 2, 3]),
      graceS: r.pick([0.2, 0.5, 1, 2]),
      onShutdown: r.chance(0.25) ? 'release' : 'stop',
    });
  }
  const killVariant: Plan['killVariant'] = r.chance(0.5) ? 'killmode' : 'pdeathsig';
  const items: ItemSpec[] = [];
  for (let i = r.int(2, 5); i > 0; i--) items.push(drawItem(r, killVariant));
  // Enough work that leases are held while the faults land: topped up to `inFlight` during the chaos phase.
  const inFlight = r.int(2, 4);
  const reserve: ItemSpec[] = [];
  for (let i = 0; i < 12; i++) reserve.push(drawItem(r, killVariant));
  const [lo, hi] = opts.chaosMs ?? [2500, 4500];
  const chaosMs = r.int(lo, hi);
  const actions: TimedAction[] = [];
  const lifecycle = new Set<number>();
  for (let i = r.int(3, 7); i > 0; i--) {
    const atMs = r.int(300, chaosMs);
    const action = drawAction(r, ttlS, nKeepers);
    // One lifecycle signal per keeper: a second one would be aimed at a keeper already going away.
    if ('keeper' in action) {
      if (lifecycle.has(action.keeper)) continue;
      lifecycle.add(action.keeper);
    }
    actions.push({ atMs, action });
  }
  actions.sort((a, b) => a.atMs - b.atMs);
  return { seed, ttlS, keepers, items, reserve, inFlight, killVariant, chaosMs, actions };
}

export function describeAction(a: Action): string {
  switch (a.kind) {
    case 'server_fault': {
      const s = a.spec;
      const extra = s.latency_ms !== undefined ? ` ${s.latency_ms}ms` : s.status !== undefined ? ` ${s.status}` : s.retry_after_s !== undefined ? ` retry-after ${s.retry_after_s}s` : s.body !== undefined ? ` ${JSON.stringify(s.body.slice(0, 24))}` : '';
      return `${a.name} on ${s.endpoint}${extra} x${s.times ?? 1}${a.targetItem ? ' (one item)' : ''}`;
    }
    case 'outage':
      return `outage (${a.mode}) ${a.ms}ms`;
    case 'keeper_sigterm':
      return `SIGTERM keeper k${a.keeper}`;
    case 'keeper_sigkill':
      return `SIGKILL keeper k${a.keeper}${a.restartAfterMs === null ? '' : `, restart after ${a.restartAfterMs}ms`}`;
    case 'keeper_double_sigterm':
      return `SIGTERM x2 keeper k${a.keeper} (${a.gapMs}ms apart)`;
    default:
      return a.kind;
  }
}
