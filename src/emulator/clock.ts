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

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/;

/** True for an RFC 3339 date-time (any offset, any fraction length) that names a real instant. */
export function isRfc3339(value: string): boolean {
  const m = RFC3339.exec(value);
  if (!m) return false;
  const [month, day, hour, minute, second] = [m[2], m[3], m[4], m[5], m[6]].map(Number) as [
    number,
    number,
    number,
    number,
    number,
  ];
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 59) return false;
  return !Number.isNaN(Date.parse(value.replace(/\.\d+/, '').toUpperCase()));
}

/** Milliseconds ISO string (event log `at`). */
export const isoMs = (ms: number): string => new Date(ms).toISOString();
