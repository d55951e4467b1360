import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NO_HEARTBEAT, type WorkState } from '../../src/api/types.js';
import { manualClock } from '../../src/emulator/clock.js';
import { DEFAULT_SETTINGS, EmulatorCore } from '../../src/emulator/core.js';
import { listItems, queueStats } from '../../src/emulator/queries.js';
import { EmulatorError, type EmulatorSettings } from '../../src/emulator/types.js';

const MICRO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

function setup(settings: Partial<EmulatorSettings> = {}) {
  const clock = manualClock();
  const core = new EmulatorCore('env_test', clock, { ...DEFAULT_SETTINGS, ...settings });
  const { store } = core;
  const api = { requestId: 'req', by: 'api' as const };
  const w = (workerId: string | null) => ({ ...api, workerId });
  /** Status of an operation: 200 or the EmulatorError's status. */
  const st = (fn: () => unknown): number => {
    try {
      store.sweep();
      fn();
      return 200;
    } catch (e) {
      if (e instanceof EmulatorError) return e.status;
      throw e;
    }
  };
  /** Brings a fresh item into the given state; returns its id and the lease string if any. */
  const inState = (state: WorkState, worker = 'w1'): { id: string; hb: string | null } => {
    const [item] = core.queue();
    const id = item!.id;
    if (state === 'queued') return { id, hb: null };
    if (state === 'stopped') {
      store.stop(id, true, api);
      return { id, hb: null };
    }
    store.ack(id, w(worker)); // a queued item may be acked without a poll
    if (state === 'starting') return { id, hb: null };
    const hb = store.heartbeat(id, { expected: NO_HEARTBEAT, desiredTtl: 60 }, w(worker)).last_heartbeat;
    if (state === 'stopping') store.stop(id, false, api);
    return { id, hb };
  };
  return { clock, core, store, api, w, st, inState };
}

describe('emulator state machine (qoder-work-api.md §3)', () => {
  it('queued -> poll delivers, state stays queued; redelivery only after reclaim_older_than_ms', () => {
    const { core, store, clock, w } = setup();
    const [a] = core.queue();
    expect(store.tryDeliver('w1', 5000, w('w1'))).toMatchObject({ id: a!.id, state: 'queued' });
    expect(store.tryDeliver('w2', 5000, w('w2'))).toBeNull();
    clock.advanceMs(4999);
    expect(store.tryDeliver('w2', 5000, w('w2'))).toBeNull();
    expect(store.tryDeliver('w2', 4999, w('w2'))?.id).toBe(a!.id); // the poller's own window decides
    expect(store.tryDeliver('w3', 0, w('w3'))?.id).toBe(a!.id); // 0 = redeliver at once
    const delivered = core.events.since(0).filter((e) => e.type === 'poll_delivered');
    expect(delivered.map((e) => [e.worker_id, e.redelivery, e.previous_worker_id])).toEqual([
      ['w1', false, undefined],
      ['w2', true, 'w1'],
      ['w3', true, 'w2'],
    ]);
  });

  it('queued -> ack -> starting (acknowledged_at); 409 for a different Worker-ID within the window', () => {
    const { core, store, clock, w, st } = setup();
    const [a] = core.queue();
    store.tryDeliver('w1', 5000, w('w1'));
    expect(st(() => store.ack(a!.id, w('w2')))).toBe(409);
    clock.advanceMs(5000);
    // outside the window the first delivery is stale: another worker may ack
    const acked = store.ack(a!.id, w('w2'));
    expect(acked.state).toBe('starting');
    expect(acked.acknowledged_at).toMatch(MICRO_RE);
    expect(core.item(a!.id).acked_by).toBe('w2');
    // without Worker-ID on either side nobody can tell them apart: allowed
    const [b] = core.queue();
    store.tryDeliver(null, 5000, w(null));
    expect(st(() => store.ack(b!.id, w('w9')))).toBe(200);
    expect(core.events.since(0).filter((e) => e.type === 'ack').length).toBe(2);
  });

  it('ack retry on starting/active by the same worker: 200 unchanged; by another: 409; stopping/stopped: 409', () => {
    const { store, st, inState, w } = setup();
    for (const state of ['starting', 'active'] as const) {
      const { id } = inState(state);
      const before = store.get(id);
      expect(store.ack(id, w('w1'))).toEqual(before);
      expect(store.ack(id, w(null))).toEqual(before);
      expect(st(() => store.ack(id, w('w2')))).toBe(409);
    }
    for (const state of ['stopping', 'stopped'] as const) {
      const { id } = inState(state);
      expect(st(() => store.ack(id, w('w1')))).toBe(409);
    }
  });

  it('first heartbeat: starting -> active (started_at), with NO_HEARTBEAT or no precondition', () => {
    const { store, inState, w, st } = setup();
    for (const expected of [NO_HEARTBEAT, undefined]) {
      const { id } = inState('starting');
      const hb = store.heartbeat(id, { ...(expected ? { expected } : {}), desiredTtl: 30 }, w('w1'));
      expect(hb).toEqual({ type: 'work_heartbeat', last_heartbeat: hb.last_heartbeat, lease_extended: true, state: 'active', ttl_seconds: 30 });
      expect(hb.last_heartbeat).toMatch(MICRO_RE);
      const item = store.get(id);
      expect(item.started_at).toBe(hb.last_heartbeat);
      expect(item.latest_heartbeat_at).toBe(hb.last_heartbeat);
    }
    const { id } = inState('starting');
    expect(st(() => store.heartbeat(id, { expected: '2026-07-01T08:15:06.120394Z' }, w('w1')))).toBe(412);
  });

  it('heartbeat on active: expected must equal last_heartbeat byte for byte', () => {
    const { store, inState, w, st } = setup();
    const { id, hb } = inState('active');
    const same = new Date(Date.parse(hb!)).toISOString(); // the same instant, re-formatted (ms)
    expect(st(() => store.heartbeat(id, { expected: same }, w('w1')))).toBe(412);
    expect(st(() => store.heartbeat(id, { expected: hb!.replace('Z', '+00:00') }, w('w1')))).toBe(412);
    expect(st(() => store.heartbeat(id, { expected: NO_HEARTBEAT }, w('w1')))).toBe(412);
    const next = store.heartbeat(id, { expected: hb! }, w('w1'));
    expect(next.state).toBe('active');
    expect(next.last_heartbeat > hb!).toBe(true);
    expect(st(() => store.heartbeat(id, { expected: hb! }, w('w1')))).toBe(412); // the old one is spent
    expect(st(() => store.heartbeat(id, {}, w('w1')))).toBe(200); // absent = unconditional
  });

  it('heartbeat on queued/stopped: 409; on stopping: stays stopping, lease extended', () => {
    const { store, inState, w, st, clock } = setup();
    for (const state of ['queued', 'stopped'] as const) {
      const { id } = inState(state);
      expect(st(() => store.heartbeat(id, { expected: NO_HEARTBEAT }, w('w1')))).toBe(409);
      expect(st(() => store.heartbeat(id, {}, w('w1')))).toBe(409);
    }
    const { id, hb } = inState('stopping');
    clock.advanceMs(1000);
    const r = store.heartbeat(id, { expected: hb!, desiredTtl: 60 }, w('w1'));
    expect(r).toMatchObject({ state: 'stopping', lease_extended: true, ttl_seconds: 60 });
    expect(store.get(id).stop_requested_at).toMatch(MICRO_RE);
  });

  it('stop force=false: queued->stopped, starting/active->stopping, stopping->stopped, stopped unchanged', () => {
    const { store, inState, api } = setup();
    const expectations: [WorkState, WorkState][] = [
      ['queued', 'stopped'],
      ['starting', 'stopping'],
      ['active', 'stopping'],
      ['stopping', 'stopped'],
      ['stopped', 'stopped'],
    ];
    for (const [from, to] of expectations) {
      const { id } = inState(from);
      const before = store.get(id);
      const after = store.stop(id, false, api);
      expect(after.state, from).toBe(to);
      if (to === 'stopping') expect(after.stop_requested_at).toMatch(MICRO_RE);
      if (from !== 'stopped' && to === 'stopped') expect(after.stopped_at).toMatch(MICRO_RE);
      if (from === 'stopped') expect(after).toEqual(before);
    }
  });

  it('stop force=true: every state -> stopped, the lease ends', () => {
    const { store, core, inState, api } = setup();
    for (const from of ['queued', 'starting', 'active', 'stopping', 'stopped'] as const) {
      const { id } = inState(from);
      expect(store.stop(id, true, api).state).toBe('stopped');
      expect(core.item(id).lease).toBeNull();
    }
  });

  it('grants clamp(desired, 10, 600), or exactly the override; 60 when desired is absent', () => {
    const { core, store, inState, w } = setup();
    const { id } = inState('active');
    const ttl = (d?: number) => store.heartbeat(id, d === undefined ? {} : { desiredTtl: d }, w('w1')).ttl_seconds;
    expect([ttl(1), ttl(9), ttl(10), ttl(45), ttl(600), ttl(601), ttl(1e9), ttl()]).toEqual([10, 10, 10, 45, 600, 600, 600, 60]);
    core.setSettings({ ttl_override_seconds: 2 });
    expect([ttl(1), ttl(60), ttl(600), ttl()]).toEqual([2, 2, 2, 2]);
    core.setSettings({ ttl_override_seconds: null });
    expect(ttl(5)).toBe(10);
  });

  it('lease expiry: active -> queued once now > last heartbeat + ttl, redeliverable at once', () => {
    const { core, store, clock, inState, w, st } = setup();
    const { id, hb } = inState('active'); // ttl 60
    clock.advanceMs(60_000);
    store.sweep();
    expect(store.get(id).state).toBe('active'); // exactly at the deadline: still held
    clock.advanceMs(1);
    store.sweep();
    const item = store.get(id);
    expect(item).toMatchObject({ state: 'queued', acknowledged_at: null, started_at: null, latest_heartbeat_at: null });
    expect(core.item(id).lease).toBeNull();
    const exp = core.events.since(0).find((e) => e.type === 'lease_expired')!;
    expect(exp).toMatchObject({ work_id: id, reason: 'ttl', from_state: 'active', to_state: 'queued', last_heartbeat: hb, worker_id: 'w1' });
    expect(exp.t_ms).toBeGreaterThan(exp.lease_expires_at_ms as number);
    // the old holder: 409 (queued); once someone else holds it: 412
    expect(st(() => store.heartbeat(id, { expected: hb! }, w('w1')))).toBe(409);
    expect(store.tryDeliver('w2', 5000, w('w2'))?.id).toBe(id);
    store.ack(id, w('w2'));
    store.heartbeat(id, { expected: NO_HEARTBEAT }, w('w2'));
    expect(st(() => store.heartbeat(id, { expected: hb! }, w('w1')))).toBe(412);
  });

  it('lease expiry: stopping -> stopped; starting too long -> queued; stopping without a lease -> stopped', () => {
    const { core, store, clock, inState } = setup({ starting_timeout_ms: 60_000 });
    const stopping = inState('stopping');
    const starting = inState('starting');
    const stopNoLease = inState('starting');
    store.stop(stopNoLease.id, false, { by: 'api' });
    clock.advanceMs(60_001);
    store.sweep();
    expect(store.get(stopping.id)).toMatchObject({ state: 'stopped' });
    expect(store.get(starting.id)).toMatchObject({ state: 'queued', acknowledged_at: null });
    expect(store.get(stopNoLease.id)).toMatchObject({ state: 'stopped' });
    const reasons = core.events.since(0).filter((e) => e.type === 'lease_expired').map((e) => [e.work_id, e.reason, e.to_state]);
    expect(reasons).toEqual([
      [stopping.id, 'ttl', 'stopped'],
      [starting.id, 'starting_timeout', 'queued'],
      [stopNoLease.id, 'starting_timeout', 'stopped'],
    ]);
  });

  it('takeover: new last_heartbeat, a new epoch, the current ttl; the old holder gets 412', () => {
    const { core, store, clock, inState, w, st } = setup();
    const { id, hb } = inState('active');
    clock.advanceMs(1000);
    const t = core.takeover(id);
    expect(t.heartbeat.last_heartbeat > hb!).toBe(true);
    expect(t.heartbeat.ttl_seconds).toBe(60);
    expect(core.item(id).lease).toMatchObject({ holder_worker_id: 'emulator-takeover', epoch: 2, heartbeats: 1 });
    expect(st(() => store.heartbeat(id, { expected: hb! }, w('w1')))).toBe(412);
    expect(st(() => store.ack(id, w('w1')))).toBe(409);
    const [q] = core.queue();
    expect(st(() => core.takeover(q!.id))).toBe(409);
    expect(st(() => core.takeover('work_nope'))).toBe(404);
    const starting = inState('starting');
    expect(core.takeover(starting.id, { workerId: 'ghost' }).item.state).toBe('active');
  });

  it('every timestamp is µs-formatted and each item strictly increases even on a frozen clock', () => {
    const { store, inState, w } = setup();
    const { id, hb } = inState('active');
    let prev = hb!;
    for (let i = 0; i < 50; i++) {
      const r = store.heartbeat(id, { expected: prev }, w('w1'));
      expect(r.last_heartbeat).toMatch(MICRO_RE);
      expect(r.last_heartbeat > prev).toBe(true);
      prev = r.last_heartbeat;
    }
  });
});

describe('emulator queries', () => {
  it('lists ascending with after/before cursors and has_more/next_page', () => {
    const { core, store } = setup();
    const ids = core.queue({ count: 5 }).map((i) => i.id);
    const list = (q: Parameters<typeof listItems>[1]) => listItems(store.records.values(), q);
    const p1 = list({ limit: 2 });
    expect(p1).toMatchObject({ first_id: ids[0], last_id: ids[1], has_more: true, next_page: ids[1] });
    const p2 = list({ limit: 2, after: p1.next_page! });
    expect(p2.data.map((i) => i.id)).toEqual(ids.slice(2, 4));
    const p3 = list({ limit: 2, after: p2.next_page! });
    expect(p3).toMatchObject({ first_id: ids[4], last_id: ids[4], has_more: false, next_page: null });
    expect(list({ limit: 2, before: ids[4] }).data.map((i) => i.id)).toEqual(ids.slice(2, 4));
    expect(list({ limit: 2, before: ids[4] })).toMatchObject({ has_more: true, next_page: null });
    expect(list({ limit: 10, before: ids[0] })).toEqual({ data: [], first_id: null, last_id: null, has_more: false, next_page: null });
  });

  it('stats: depth, pending, oldest_queued_at, workers_polling (30 s)', () => {
    const { core, store, clock, w } = setup();
    const [a, b] = core.queue({ count: 2 });
    clock.advanceMs(10);
    core.queue();
    const stats = () => queueStats(store.records.values(), store.pollers, store.nowMs());
    store.notePoller('w1');
    store.tryDeliver('w1', 5000, w('w1')); // a: pending for 5 s
    expect(stats()).toEqual({ type: 'work_queue_stats', depth: 2, pending: 1, oldest_queued_at: a!.created_at, workers_polling: 1 });
    clock.advanceMs(5000); // a's window is over: claimable again
    expect(stats()).toMatchObject({ depth: 3, pending: 0 });
    store.ack(b!.id, w('w2')); // b was never delivered: acking it straight away is fine
    store.notePoller('w2');
    expect(stats()).toMatchObject({ depth: 2, pending: 0, oldest_queued_at: a!.created_at, workers_polling: 2 });
    clock.advanceMs(25_001); // w1 polled 30.001 s ago, w2 25.001 s ago
    expect(stats().workers_polling).toBe(1);
    store.stop(a!.id, true, {});
    expect(stats().oldest_queued_at).not.toBe(a!.created_at);
    core.queue(); // nothing queued -> null is covered below
    for (const r of store.records.values()) store.stop(r.item.id, true, {});
    expect(stats()).toMatchObject({ depth: 0, pending: 0, oldest_queued_at: null });
  });
});

describe('emulator invariants under random operation sequences', () => {
  type Op =
    | { k: 'poll'; w: number; reclaim: number }
    | { k: 'ack'; w: number; i: number }
    | { k: 'hb'; w: number; i: number; ttl: number; mode: 'echo' | 'none' | 'stale' | 'absent' }
    | { k: 'stop'; i: number; force: boolean }
    | { k: 'takeover'; i: number }
    | { k: 'wait'; ms: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ k: fc.constant('poll' as const), w: fc.nat(2), reclaim: fc.constantFrom(0, 1000, 5000) }),
    fc.record({ k: fc.constant('ack' as const), w: fc.nat(2), i: fc.nat(2) }),
    fc.record({ k: fc.constant('hb' as const), w: fc.nat(2), i: fc.nat(2), ttl: fc.integer({ min: 1, max: 30 }), mode: fc.constantFrom('echo' as const, 'none' as const, 'stale' as const, 'absent' as const) }),
    fc.record({ k: fc.constant('stop' as const), i: fc.nat(2), force: fc.boolean() }),
    fc.record({ k: fc.constant('takeover' as const), i: fc.nat(2) }),
    fc.record({ k: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 25_000 }) }),
  );

  it('leases never overlap except by takeover, last_heartbeat strictly increases, stopped is final', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), fc.boolean(), (ops, override) => {
        const { core, store, clock, w } = setup(override ? { ttl_override_seconds: 2 } : {});
        const ids = core.queue({ count: 3 }).map((i) => i.id);
        const known = new Map<string, string>(); // `${worker}/${id}` -> the last_heartbeat it was given
        for (const o of ops) {
          store.sweep();
          try {
            if (o.k === 'poll') store.tryDeliver(`w${o.w}`, o.reclaim, w(`w${o.w}`));
            else if (o.k === 'ack') store.ack(ids[o.i]!, w(`w${o.w}`));
            else if (o.k === 'hb') {
              const key = `w${o.w}/${ids[o.i]}`;
              const expected = o.mode === 'echo' ? (known.get(key) ?? NO_HEARTBEAT) : o.mode === 'none' ? NO_HEARTBEAT : o.mode === 'stale' ? '2020-01-01T00:00:00.000000Z' : undefined;
              const r = store.heartbeat(ids[o.i]!, { ...(expected ? { expected } : {}), desiredTtl: o.ttl }, w(`w${o.w}`));
              known.set(key, r.last_heartbeat);
            } else if (o.k === 'stop') store.stop(ids[o.i]!, o.force, { by: 'api' });
            else if (o.k === 'takeover') core.takeover(ids[o.i]!);
            else clock.advanceMs(o.ms);
          } catch (e) {
            if (!(e instanceof EmulatorError)) throw e;
            expect([404, 409, 412]).toContain(e.status);
          }
        }
        store.sweep();
        // Replay the log per item.
        for (const id of ids) {
          const evs = core.events.since(0).filter((e) => e.work_id === id);
          let epoch: number | null = null;
          let expiresAt = -Infinity;
          let lastHb = '';
          let stopped = false;
          for (const e of evs) {
            if (stopped) expect(e.type).toBe('stop_unchanged'); // stopped is final
            if (e.type === 'heartbeat_accepted' || e.type === 'takeover') {
              expect((e.last_heartbeat as string) > lastHb).toBe(true);
              lastHb = e.last_heartbeat as string;
              if (e.type === 'heartbeat_accepted' && e.new_lease) {
                expect(epoch).toBeNull(); // nobody held it
                expect(e.t_ms).toBeGreaterThan(expiresAt); // strictly after the previous lease ran out
              }
              if (e.type === 'heartbeat_accepted' && !e.new_lease) {
                expect(e.lease_epoch).toBe(epoch);
                expect(e.t_ms).toBeLessThanOrEqual(expiresAt); // only a live lease is extended
              }
              epoch = e.lease_epoch as number;
              expiresAt = e.lease_expires_at_ms as number;
            }
            if (e.type === 'lease_expired' && e.reason === 'ttl') {
              expect(e.lease_epoch).toBe(epoch);
              expect(e.t_ms).toBeGreaterThan(expiresAt);
              epoch = null;
            }
            if (e.type === 'stopped') {
              stopped = true;
              epoch = null;
            }
          }
          const final = store.get(id);
          if (final.state === 'active') expect(core.item(id).lease).not.toBeNull();
          if (final.state === 'queued' || final.state === 'stopped') expect(core.item(id).lease).toBeNull();
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('emulator expiry without a scan per request', () => {
  it('sweep() skips its scan until the earliest deadline, and expires exactly what is due, to the ms', () => {
    const { store, clock, inState, w, core } = setup();
    const state = (id: string) => store.records.get(id)!.item.state;
    const a = inState('active'); // ttl 60 s
    const b = inState('active');
    const bHb = store.heartbeat(b.id, { expected: b.hb!, desiredTtl: 600 }, w('w1')).last_heartbeat; // now 600 s
    clock.advanceMs(60_000); // a's deadline exactly: not past it yet
    expect(store.sweep()).toBe(false);
    expect(state(a.id)).toBe('active');
    clock.advanceMs(1);
    expect(store.sweep()).toBe(true);
    expect([state(a.id), state(b.id)]).toEqual(['queued', 'active']);
    // b renews with a shorter ttl (10 s): its new deadline, far before the old one, counts at once.
    store.heartbeat(b.id, { expected: bHb, desiredTtl: 10 }, w('w1'));
    clock.advanceMs(10_000);
    expect(store.sweep()).toBe(false);
    clock.advanceMs(1);
    expect(store.sweep()).toBe(true);
    expect(state(b.id)).toBe('queued');
    // A shorter starting timeout set by the admin applies to an item already starting, at once.
    const c = inState('starting');
    clock.advanceMs(2000);
    expect(store.sweep()).toBe(false);
    core.setSettings({ starting_timeout_ms: 1000 });
    expect(state(c.id)).toBe('queued');
  });
});
