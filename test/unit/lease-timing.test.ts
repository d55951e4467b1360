/**
 * The numbers of the lease rules (src/lease/timing.ts) and the `--once` exit codes (src/lease/outcome.ts),
 * as literal figures from the spec and the timing comments. The machine tests derive some expectations
 * from these functions; here each one is pinned on its own, at and around its bounds.
 */
import { constants } from 'node:os';
import { describe, expect, it } from 'vitest';
import { EXIT, OUTCOMES, exitCodeFor } from '../../src/lease/outcome.js';
import { backoffMs, effectiveFenceGraceMs, fenceMarginMs, heartbeatIntervalMs, reapAllowanceMs } from '../../src/lease/timing.js';

const signalNumber = (s: NodeJS.Signals): number => constants.signals[s];

describe('lease timing: interval, margin, reap allowance', () => {
  it('the interval is fraction × the granted ttl', () => {
    expect(heartbeatIntervalMs(10_000, 0.33)).toBeCloseTo(3300, 9);
    expect(heartbeatIntervalMs(60_000, 0.25)).toBe(15_000);
  });

  it('the derived margin is 10% of the ttl, never below 250 ms, never above 2 s', () => {
    expect(fenceMarginMs(10_000, null)).toBe(1000);
    expect(fenceMarginMs(15_000, null)).toBe(1500);
    expect(fenceMarginMs(1000, null)).toBe(250); // 100 ms would be too little
    expect(fenceMarginMs(600_000, null)).toBe(2000); // 60 s would waste most of a long lease
  });

  it('a configured margin is used as is, but never more than half the ttl', () => {
    expect(fenceMarginMs(10_000, 700)).toBe(700);
    expect(fenceMarginMs(10_000, 0)).toBe(0);
    expect(fenceMarginMs(10_000, 8000)).toBe(5000);
  });

  it('the kill goes out a tenth of the margin early, at most 50 ms', () => {
    expect(reapAllowanceMs(250)).toBe(25);
    expect(reapAllowanceMs(400)).toBe(40);
    expect(reapAllowanceMs(1000)).toBe(50);
    expect(reapAllowanceMs(2000)).toBe(50);
  });
});

describe('lease timing: heartbeat retry backoff', () => {
  // random 0: the fixed half only; random 1: the whole delay.
  it('starts at a tenth of the interval and doubles per attempt, up to half the interval', () => {
    const interval = 3300; // base 330, cap 1650
    expect(backoffMs(1, interval, 1)).toBe(330);
    expect(backoffMs(2, interval, 1)).toBe(660);
    expect(backoffMs(3, interval, 1)).toBe(1320);
    expect(backoffMs(4, interval, 1)).toBe(1650);
    expect(backoffMs(9, interval, 1)).toBe(1650);
  });

  it('attempt 0 (a timeout before any failure was counted) waits like the first retry', () => {
    expect(backoffMs(0, 3300, 1)).toBe(330);
  });

  it('equal jitter: half of the delay is fixed, the other half scales with the random draw', () => {
    expect(backoffMs(2, 3300, 0)).toBe(330);
    expect(backoffMs(2, 3300, 0.5)).toBe(495);
    expect(backoffMs(2, 3300, 1)).toBe(660);
  });

  it('the base stays within 50 ms..1 s, and the cap is never below the base', () => {
    expect(backoffMs(1, 200, 1)).toBe(50); // a tenth would be 20 ms; the cap (100) is above the base
    expect(backoffMs(3, 200, 1)).toBe(100);
    expect(backoffMs(1, 60_000, 1)).toBe(1000); // a tenth would be 6 s
    expect(backoffMs(6, 60_000, 1)).toBe(30_000);
    expect(backoffMs(3, 80, 1)).toBe(50); // half the interval (40) is below the base: the base wins
  });

  it('before any lease was granted it assumes a 5 s interval', () => {
    expect(backoffMs(1, null, 1)).toBe(500);
    expect(backoffMs(4, null, 1)).toBe(2500);
  });
});

describe('lease timing: effective fence grace', () => {
  it('keeps what the lease leaves after margin and two intervals, at least 10% of the ttl, at most the configured grace', () => {
    expect(effectiveFenceGraceMs(10_000, 3300, 1000, 10_000)).toBe(2400);
    expect(effectiveFenceGraceMs(10_000, 5000, 1000, 10_000)).toBe(1000);
    expect(effectiveFenceGraceMs(10_000, 3300, 1000, 500)).toBe(500);
    expect(effectiveFenceGraceMs(10_000, 3300, 1000, 0)).toBe(0);
  });
});

describe('--once exit codes (spec §6)', () => {
  it('a lost or self-fenced lease exits 75, whatever the job did', () => {
    expect(EXIT).toEqual({ ok: 0, leaseLost: 75, auth: 77, config: 78, software: 70 });
    expect(exitCodeFor('lease_lost', { code: 0, signal: null }, signalNumber)).toBe(75);
    expect(exitCodeFor('self_fenced', { code: null, signal: 'SIGKILL' }, signalNumber)).toBe(75);
  });

  it('a job that ended (by itself, drained or stopped by the server) exits with its own code, 128+N for signal N', () => {
    for (const outcome of ['completed', 'failed', 'drained', 'stopped_by_server'] as const) {
      expect(exitCodeFor(outcome, { code: 3, signal: null }, signalNumber)).toBe(3);
      expect(exitCodeFor(outcome, { code: 0, signal: null }, signalNumber)).toBe(0);
      expect(exitCodeFor(outcome, { code: null, signal: 'SIGTERM' }, signalNumber)).toBe(143);
      expect(exitCodeFor(outcome, { code: null, signal: 'SIGKILL' }, signalNumber)).toBe(137);
      expect(exitCodeFor(outcome, { code: null, signal: null }, signalNumber)).toBe(1);
      expect(exitCodeFor(outcome, null, signalNumber)).toBe(1);
    }
  });

  it('a job that could not start exits like a shell: its code, else 127', () => {
    expect(exitCodeFor('spawn_failed', { code: 126, signal: null }, signalNumber)).toBe(126);
    expect(exitCodeFor('spawn_failed', { code: 127, signal: null }, signalNumber)).toBe(127);
    expect(exitCodeFor('spawn_failed', null, signalNumber)).toBe(127);
  });

  it('a clean keeper shutdown exits 0, even when the drained job did not', () => {
    expect(exitCodeFor('shutdown', { code: 143, signal: null }, signalNumber)).toBe(0);
    expect(exitCodeFor('shutdown', null, signalNumber)).toBe(0);
  });

  it('the outcomes are the eight names README and the metadata use', () => {
    expect([...OUTCOMES]).toEqual(['completed', 'failed', 'stopped_by_server', 'drained', 'lease_lost', 'self_fenced', 'shutdown', 'spawn_failed']);
  });
});
