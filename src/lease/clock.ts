/** Monotonic milliseconds. Lease decisions never read the wall clock (it jumps); tests inject a fake. */
export interface Clock {
  now(): number;
}

export const monotonicClock: Clock = {
  now: () => performance.now(),
};
