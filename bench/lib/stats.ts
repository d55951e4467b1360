// Statistics of the benchmark figures.

/** Nearest-rank percentile of a numeric array (p in 0..100). */
export function percentile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1] ?? null;
}

export function round(v: number | null | undefined, digits = 1): number | null {
  return v === null || v === undefined || Number.isNaN(v) || !Number.isFinite(v) ? null : Number(v.toFixed(digits));
}

export interface Summary {
  n: number;
  min: number | null;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
}

export function summary(values: readonly number[], digits = 1): Summary {
  if (values.length === 0) return { n: 0, min: null, p50: null, p90: null, p99: null, max: null };
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return {
    n: values.length,
    min: round(min, digits),
    p50: round(percentile(values, 50), digits),
    p90: round(percentile(values, 90), digits),
    p99: round(percentile(values, 99), digits),
    max: round(max, digits),
  };
}

export function pick<T extends object, K extends keyof T>(o: T, keys: readonly K[]): Pick<T, K> {
  const out = {} as Pick<T, K>;
  for (const k of keys) out[k] = o[k];
  return out;
}

/** Median (of an odd or even count: the lower middle, nearest rank) and the range, for repeated windows. */
export function medianSpread(values: readonly number[], digits = 2): { median: number | null; min: number | null; max: number | null; spread_pct: number | null } {
  const med = percentile(values, 50);
  if (med === null) return { median: null, min: null, max: null, spread_pct: null };
  const min = Math.min(...values);
  const max = Math.max(...values);
  return { median: round(med, digits), min: round(min, digits), max: round(max, digits), spread_pct: round((100 * (max - min)) / med, 1) };
}
