/**
 * Time for the emulator: wall-clock microseconds (the control plane speaks RFC 3339 with µs), plus the
 * formatting and validation of those strings. Every timestamp the emulator hands out comes from one
 * strictly increasing counter, so two heartbeats can never share a `last_heartbeat`.
 */

/** Wall-clock time in integer microseconds since the epoch. `Math.floor(nowUs() / 1000)` is `Date.now()`. */
export interface EmulatorClock {
  nowUs(): number;
}

/** Date.now() for the milliseconds, the high-resolution timer for the microseconds below them. */
export function realClock(): EmulatorClock {
  let last = 0;
  return {
    nowUs(): number {
      const ms = Date.now();
      const sub = Number(process.hrtime.bigint() % 1_000_000n) / 1000;
      let us = ms * 1000 + Math.floor(sub);
      if (us <= last) us = last + 1;
      last = us;
      return us;
    },
  };
}

/** A clock tests move by hand. */
export function manualClock(startUs = Date.UTC(2026, 6, 1, 8, 15, 6) * 1000 + 120_394): EmulatorClock & {
  advanceMs(ms: number): void;
  setUs(us: number): void;
} {
  let now = startUs;
  return {
    nowUs: () => now,
    advanceMs(ms: number) {
      now += Math.round(ms * 1000);
    },
    setUs(us: number) {
      now = us;
    },
  };
}

/** `2026-07-01T08:15:06.120394Z`: RFC 3339, UTC, always six fractional digits. */
export function formatMicros(us: number): string {
  const ms = Math.floor(us / 1000);
  const micros = us - Math.floor(us / 1_000_000) * 1_000_000;
  const iso = new Date(ms).toISOString(); // 2026-07-01T08:15:06.120Z
  return `${iso.slice(0, 19)}.${String(micros).padStart(6, '0')}Z`;
}

/** Milliseconds ISO string (event log `at`). */
export const isoMs = (ms: number): string => new Date(ms).toISOString();
