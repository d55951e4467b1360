import type { WorkHeartbeat, WorkItem } from '../api/types.js';
import type { EmulatorClock } from './clock.js';
import { EventLog } from './events.js';
import { FaultRegistry, type Fault, type FaultSpec } from './faults.js';
import { IdempotencyKeys } from './idempotency.js';
import type { WorkQueueStats } from '../api/types.js';
import { queueStats } from './queries.js';
import { WorkStore } from './store.js';
import { TokenRegistry, type TokenView } from './tokens.js';
import { badRequest, type AdminItem, type CallContext, type EmulatorEvent, type EmulatorSettings } from './types.js';

export const DEFAULT_SETTINGS: EmulatorSettings = {
  ttl_override_seconds: null,
  reclaim_default_ms: 5000,
  starting_timeout_ms: 60_000,
  environment_type: 'self_hosted',
  default_ttl_seconds: 60,
  idempotency_ttl_ms: 24 * 3600 * 1000,
  idempotency_max_keys: 10_000,
};

const isInt = (v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): v is number =>
  typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;

/** Validates a settings patch (snake_case, as over HTTP); unknown keys and bad values are 400. */
export function parseSettingsPatch(input: unknown): Partial<EmulatorSettings> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw badRequest('settings must be an object');
  const out: Partial<EmulatorSettings> = {};
  for (const [k, v] of Object.entries(input)) {
    switch (k) {
      case 'ttl_override_seconds':
        if (v !== null && !isInt(v, 1, 600)) throw badRequest('ttl_override_seconds must be null or an integer 1..600');
        out.ttl_override_seconds = v;
        break;
      case 'reclaim_default_ms':
        if (!isInt(v, 0)) throw badRequest('reclaim_default_ms must be an integer >= 0');
        out.reclaim_default_ms = v;
        break;
      case 'starting_timeout_ms':
        if (!isInt(v, 1)) throw badRequest('starting_timeout_ms must be an integer >= 1');
        out.starting_timeout_ms = v;
        break;
      case 'environment_type':
        if (v !== 'self_hosted' && v !== 'cloud') throw badRequest('environment_type must be "self_hosted" or "cloud"');
        out.environment_type = v;
        break;
      case 'default_ttl_seconds':
        if (!isInt(v, 1)) throw badRequest('default_ttl_seconds must be a positive integer');
        out.default_ttl_seconds = v;
        break;
      case 'idempotency_ttl_ms':
        if (!isInt(v, 1)) throw badRequest('idempotency_ttl_ms must be a positive integer');
        out.idempotency_ttl_ms = v;
        break;
      case 'idempotency_max_keys':
        if (!isInt(v, 1)) throw badRequest('idempotency_max_keys must be a positive integer');
        out.idempotency_max_keys = v;
        break;
      default:
        throw badRequest(`unknown setting ${k}`);
    }
  }
  return out;
}

export interface QueueOptions {
  count?: number;
  data?: Record<string, unknown>;
  metadata?: Record<string, string>;
}

/**
 * The emulator without its sockets: store, event log, faults, settings, and the admin operations the
 * admin API and the in-process handle share. Every operation sweeps expired leases first.
 */
export class EmulatorCore {
  readonly events: EventLog;
  readonly faults = new FaultRegistry();
  readonly store: WorkStore;
  readonly settings: EmulatorSettings;
  /** Replies stored by Idempotency-Key (bounded by the idempotency_* settings). */
  readonly idempotency = new IdempotencyKeys(() => ({ ttlMs: this.settings.idempotency_ttl_ms, maxKeys: this.settings.idempotency_max_keys }));
  /** The bearer tokens the work API accepts (rotation: accept a new one, revoke the old). */
  readonly tokens: TokenRegistry;
  private readonly initial: EmulatorSettings;

  constructor(
    readonly environmentId: string,
    readonly clock: EmulatorClock,
    settings: EmulatorSettings,
    token = 'pt-emulator',
  ) {
    this.tokens = new TokenRegistry(token);
    this.initial = { ...settings };
    this.settings = { ...settings };
    this.events = new EventLog(() => Math.floor(clock.nowUs() / 1000));
    this.store = new WorkStore(environmentId, clock, this.events, this.settings);
  }

  private admin(ctx: CallContext): CallContext {
    return { ...ctx, by: 'admin' };
  }

  queue(opts: QueueOptions = {}, ctx: CallContext = {}): WorkItem[] {
    const count = opts.count ?? 1;
    if (!isInt(count, 1, 1000)) throw badRequest('count must be an integer 1..1000');
    this.store.sweep();
    const items: WorkItem[] = [];
    for (let i = 0; i < count; i++) items.push(this.store.create({ data: opts.data, metadata: opts.metadata }, this.admin(ctx)));
    return items;
  }

  items(): AdminItem[] {
    this.store.sweep();
    return [...this.store.records.values()].map((r) => this.store.adminView(r));
  }

  item(id: string): AdminItem {
    this.store.sweep();
    return this.store.adminItem(id);
  }

  requestStop(id: string, opts: { force?: boolean } = {}, ctx: CallContext = {}): WorkItem {
    if (opts.force !== undefined && typeof opts.force !== 'boolean') throw badRequest('force must be a boolean');
    this.store.sweep();
    return this.store.stop(id, opts.force ?? false, this.admin(ctx));
  }

  takeover(id: string, opts: { workerId?: string } = {}, ctx: CallContext = {}): { heartbeat: WorkHeartbeat; item: WorkItem } {
    if (opts.workerId !== undefined && (typeof opts.workerId !== 'string' || opts.workerId === '')) {
      throw badRequest('worker_id must be a non-empty string');
    }
    this.store.sweep();
    return this.store.takeover(id, opts.workerId, this.admin(ctx));
  }

  setSettings(patch: unknown, ctx: CallContext = {}): EmulatorSettings {
    const changes = parseSettingsPatch(patch);
    Object.assign(this.settings, changes);
    this.events.append({ type: 'settings_changed', request_id: ctx.requestId, changes, settings: { ...this.settings } });
    this.store.recheckDeadlines();
    this.store.sweep();
    this.store.notifyChange();
    return { ...this.settings };
  }

  injectFault(spec: FaultSpec | Record<string, unknown>, ctx: CallContext = {}): Fault {
    const f = this.faults.add(spec);
    this.events.append({ type: 'fault_added', request_id: ctx.requestId, fault_id: f.id, endpoint: f.endpoint, kind: f.kind, work_id: f.work_id, times: f.times });
    return f;
  }

  /** `{accept?: string[], revoke?: string[]}`: the event log gets fingerprints, never the tokens. */
  changeTokens(input: unknown, ctx: CallContext = {}): TokenView {
    const changed = this.tokens.change(input);
    this.events.append({ type: 'tokens_changed', request_id: ctx.requestId, accepted: changed.accepted, revoked: changed.revoked });
    return this.tokens.view();
  }

  clearFaults(ctx: CallContext = {}): number {
    const n = this.faults.clear();
    this.events.append({ type: 'faults_cleared', request_id: ctx.requestId, count: n });
    return n;
  }

  stats(): WorkQueueStats {
    this.store.sweep();
    return queueStats(this.store.records.values(), this.store.pollers, this.store.nowMs());
  }

  eventsSince(since = 0): EmulatorEvent[] {
    return this.events.since(since);
  }

  /** Back to the start: no items, no faults, the startup settings, an empty log (seq keeps counting). */
  reset(ctx: CallContext = {}): void {
    this.store.clear();
    this.faults.clear();
    this.idempotency.clear();
    this.tokens.reset();
    Object.assign(this.settings, this.initial);
    this.events.clear();
    this.events.append({ type: 'reset', request_id: ctx.requestId });
  }
}
