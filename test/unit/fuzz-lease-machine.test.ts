/**
 * Liveness of the pure lease machine, found by the chaos suite (seeds 108 and 137 of the first full run):
 * whatever happens, an item that is not finished always has something that will move it on: a heartbeat
 * in flight, a timer (wakeAt), a running job whose exit will be reported, or a report in progress. An
 * item with none of these is stuck for good: the keeper's slot is leaked, and a keeper whose only slot
 * is stuck has nothing left on its event loop, so Node exits 0 without a word (and systemd's
 * Restart=on-failure does not restart an exit 0).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type LeaseState, wakeAt } from '../../src/lease/machine.js';
import { Harness, ofType } from './lease-harness.js';

/** What keeps an unfinished item moving, or null when nothing does. */
function pending(h: Harness): string | null {
  const s: LeaseState = h.state;
  if (s.phase === 'done') return 'done';
  if (s.phase === 'reporting') return 'report in progress';
  if (s.inFlight !== null) return 'heartbeat in flight';
  if (s.job === 'running' || s.job === 'spawning') return 'job running';
  if (wakeAt(s, h.settings) !== null) return 'timer';
  return null;
}

describe('lease machine liveness (fuzz)', () => {
  it('regression: a first lease that arrives too late to start the job, then a failed beat: the item ends, it does not hang', () => {
    // ttl 1 s granted; the first reply comes back 900 ms after it was sent: past the fence's signal time
    // (deadline - 250 ms margin - 100 ms grace), so the job is not started and the next beat goes out at once.
    const h = new Harness({ desiredTtlSeconds: 10, graceMs: 1000 });
    h.start();
    h.now = 900;
    h.accept({ ttlSeconds: 1 });
    expect(ofType(h.actions, 'spawn_job')).toEqual([]);
    expect(h.state.inFlight).not.toBeNull();
    // That beat times out at the local deadline (its cutoff).
    h.now = 1000;
    h.fail({ kind: 'transient' });
    h.advanceBy(5000);
    expect(pending(h)).not.toBeNull();
    expect(h.state.phase).toBe('done');
    const finish = ofType(h.actions, 'finish');
    expect(finish).toHaveLength(1);
    // The lease ran out before the job was started: no job, no report (the item is not ours any more).
    expect(ofType(h.actions, 'report')).toEqual([]);
    expect(ofType(h.actions, 'spawn_job')).toEqual([]);
  });

  it('property: an unfinished item always has a heartbeat in flight, a timer, a running job or a report', () => {
    const step = fc.record({
      dt: fc.integer({ min: 0, max: 2500 }),
      what: fc.constantFrom('accept', 'accept', 'stopping', 'not_extended', 'transient', 'malformed', 'lost', 'conflict', 'job_exit', 'shutdown', 'shutdown_now', 'reported', 'tick'),
      ttl: fc.integer({ min: 1, max: 12 }),
    });
    fc.assert(
      fc.property(
        fc.record({ grace: fc.integer({ min: 0, max: 5000 }), desired: fc.integer({ min: 10, max: 30 }) }),
        fc.array(step, { minLength: 1, maxLength: 40 }),
        ({ grace, desired }, steps) => {
          const h = new Harness({ graceMs: grace, desiredTtlSeconds: desired });
          h.start();
          for (const st of steps) {
            h.advanceBy(st.dt);
            // No spin: once time has been advanced, the next wake time lies in the future. A wake time
            // at or before now that a tick cannot move would make the driver's timer fire in a loop.
            const w = wakeAt(h.state, h.settings);
            if (w !== null && w <= h.now) throw new Error(`wake time ${w} not in the future at ${h.now} (phase ${h.state.phase})`);
            const s = h.state;
            const inFlight = s.inFlight !== null;
            switch (st.what) {
              case 'accept':
                if (inFlight) h.accept({ ttlSeconds: st.ttl });
                break;
              case 'stopping':
                if (inFlight) h.accept({ ttlSeconds: st.ttl, state: 'stopping' });
                break;
              case 'not_extended':
                if (inFlight) h.accept({ ttlSeconds: st.ttl, leaseExtended: false });
                break;
              case 'transient':
              case 'malformed':
                if (inFlight) h.fail({ kind: st.what });
                break;
              case 'lost':
                if (inFlight) h.fail({ kind: 'lease_lost', status: 412 });
                break;
              case 'conflict':
                if (inFlight) h.fail({ kind: 'conflict', status: 409 });
                break;
              case 'job_exit':
                if (s.job === 'running') h.jobExited({ code: 0, signal: null });
                break;
              case 'shutdown':
                h.shutdown();
                break;
              case 'shutdown_now':
                h.shutdownNow();
                break;
              case 'reported':
                if (s.phase === 'reporting') h.reported();
                break;
              case 'tick':
                break;
            }
            // The driver starts the job as soon as the machine asks.
            if (h.state.job === 'spawning') h.jobStarted();
            const why = pending(h);
            if (why === null) {
              throw new Error(`stuck: phase ${h.state.phase}, job ${h.state.job}, lease held ${h.state.leaseHeld}, deadline ${h.state.deadline}, now ${h.now}`);
            }
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});
