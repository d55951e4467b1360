// What every measurement gets from the runner: the mode, its sizes, a work directory and a log.
import { join } from 'node:path';
import { ROOT } from './build.js';

/** Durations and sizes of one mode (quick or full). */
export interface Sizes {
  startupTrials: number;
  idleS: number;
  scaleItems: number;
  holdS: number;
  timingHoldS: number;
  reactionKeepers: number;
  reactionPerKeeper: number;
  reactionRate: number;
  fenceKeepers: number;
  /** Alternating keeper/baseline windows (pairs) and the length of each window. */
  ratioPairs: number;
  ratioWindowS: number;
  /** Scaling: leases per point, and how long each point is held. */
  scalingPoints: number[];
  /** Granted ttl of the scaling points: null = what the keeper asks for (60 s). */
  scalingTtlS: number | null;
  scalingHoldS: number;
  /** Also 1000 leases at the short ttl (the scale run's load). */
  scalingShortTtlPoint: boolean;
  /** Turnover: cold-fill sizes, and the short-job run. */
  fillSizes: number[];
  shortConcurrency: number;
  shortS: number;
}

export const SIZES: { quick: Sizes; full: Sizes } = {
  quick: {
    startupTrials: 3,
    idleS: 5,
    scaleItems: 500, // a smoke test: half the leases, so the three claims stay short
    holdS: 4,
    timingHoldS: 3,
    reactionKeepers: 4,
    reactionPerKeeper: 30,
    reactionRate: 40,
    fenceKeepers: 2,
    ratioPairs: 1,
    ratioWindowS: 4,
    // A smoke test: at ttl 60 s a 5 s hold would see no heartbeat at all.
    scalingPoints: [100],
    scalingTtlS: 10,
    scalingHoldS: 3,
    scalingShortTtlPoint: false,
    fillSizes: [300],
    shortConcurrency: 100,
    shortS: 2,
  },
  full: {
    startupTrials: 10,
    idleS: 60,
    scaleItems: 1000,
    holdS: 60,
    timingHoldS: 30,
    reactionKeepers: 4,
    reactionPerKeeper: 75,
    reactionRate: 10,
    fenceKeepers: 8,
    ratioPairs: 5,
    ratioWindowS: 15,
    scalingPoints: [1, 10, 100, 1000, 10_000],
    scalingTtlS: null,
    // At the default ttl (60 s) every lease beats every ~19 s: two or three beats each in the hold.
    scalingHoldS: 45,
    scalingShortTtlPoint: true,
    fillSizes: [1000, 10_000],
    shortConcurrency: 100,
    shortS: 20,
  },
};

export interface Bench {
  quick: boolean;
  /** `perf record` the measured processes (needs perf). */
  perf: boolean;
  /** The scale keeper under node --cpu-prof. */
  profile: boolean;
  keepLogs: boolean;
  /** Private directory of this run: logs, records, the build copy. */
  work: string;
  sizes: Sizes;
  log(text: string): void;
}

/** Granted ttl of the benchmarks that keep today's short ttl (scale, baseline, reaction, fence). */
export const SHORT_TTL_S = 10;
/** JS frame names for perf; code is never moved or flushed, so an address in the map names one function. */
export const PERF_NODE_ARGS = ['--perf-basic-prof', '--no-compact-code-space', '--no-flush-bytecode'];
/** The job of the reaction and fence benchmarks. */
export const TRAP_JOB = join(ROOT, 'bench/jobs/trap-job.sh');
/** Node flags that let a child process run a TypeScript file of bench/ (the runner tsx). */
export const TS_NODE_ARGS = ['--import', 'tsx'];
