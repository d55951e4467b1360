import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/**
 * Event-loop stall detection (anchors.md §4 item 7). A blocked loop delays every timer, including the heartbeat and
 * the self-fence timers, so lag is lease risk: the fence's SIGKILL is planned `margin` before the local deadline, and a
 * loop lagging by that much would fire it after the deadline.
 *
 * Two sources, because each misses a case:
 * - `perf_hooks.monitorEventLoopDelay` (resolution ~10 ms) sees every blocked interval between our ticks, but
 *   `reset()` drops the first interval after it (measured on Node 20), so a stall straddling a reset is lost;
 * - a periodic (unref'd) tick that measures its own drift catches exactly that, and `lagMs()` also counts the time
 *   since the last tick, so a stall still in progress shows even before the tick runs.
 * Each tick folds max(histogram max, drift) into a ring of samples; `lagMs()` is the max over the last `windowMs`.
 */
export interface StallGuardOptions {
  /**
   * Histogram resolution, ms. Default 50: a stall only matters once it exceeds half the fence margin
   * (125 ms at the least), and every tick of the histogram's timer wakes an idle keeper.
   */
  resolutionMs?: number;
  /**
   * Tick period of the drift check, ms. Default 100. The drift check sees at least (stall - tick), and the
   * histogram forgets the interval cut by each reset, so the tick must stay well below the smallest
   * threshold that matters (half of a 250 ms margin).
   */
  tickMs?: number;
  /** How long a lag sample counts for `lagMs()`, ms. Default 5000. */
  windowMs?: number;
  /** A sample above this starts a stall episode (counted, `onStall` called), ms. Default 200. */
  thresholdMs?: number;
  /** Called once at the start of each episode, from a timer; exceptions are swallowed. */
  onStall?: (info: { lagMs: number; episodes: number }) => void;
  /** Monotonic clock in ms; default performance.now (tests may inject). */
  now?: () => number;
}

export class StallGuard {
  readonly #resolutionMs: number;
  readonly #tickMs: number;
  readonly #thresholdMs: number;
  readonly #now: () => number;
  readonly #onStall: StallGuardOptions['onStall'];
  readonly #histogram: IntervalHistogram;
  readonly #samples: number[];
  #next = 0;
  #lastTickAt: number;
  #timer: NodeJS.Timeout | null;
  #inEpisode = false;
  #episodes = 0;

  constructor(opts: StallGuardOptions = {}) {
    this.#resolutionMs = opts.resolutionMs ?? 50;
    this.#tickMs = opts.tickMs ?? 100;
    this.#thresholdMs = opts.thresholdMs ?? 200;
    this.#now = opts.now ?? (() => performance.now());
    this.#onStall = opts.onStall;
    this.#samples = new Array<number>(Math.max(1, Math.ceil((opts.windowMs ?? 5000) / this.#tickMs))).fill(0);
    this.#histogram = monitorEventLoopDelay({ resolution: this.#resolutionMs });
    this.#histogram.enable();
    this.#lastTickAt = this.#now();
    this.#timer = setInterval(() => this.#tick(), this.#tickMs);
    this.#timer.unref();
  }

  /** Recent event-loop lag in ms: the worst sample of the window, or the stall in progress, whichever is larger. */
  lagMs(): number {
    const inProgress = this.#timer ? Math.max(0, this.#now() - this.#lastTickAt - this.#tickMs) : 0;
    return Math.max(inProgress, ...this.#samples);
  }

  /**
   * True when recent lag exceeds half of the lease safety margin (`marginMs`, the time the fence keeps between its
   * SIGKILL and the local deadline). Half, not all: the other half is left for the kill and the exit to land, and lag
   * comes in bursts, so lag at half the margin is the point where the next burst can make a fence late.
   */
  stalled(marginMs: number): boolean {
    return this.lagMs() > marginMs / 2;
  }

  /** Stall episodes so far (samples rising above `thresholdMs` after having been below). */
  get episodes(): number {
    return this.#episodes;
  }

  /** Stops the tick and the histogram. Idempotent. */
  stop(): void {
    if (!this.#timer) return;
    clearInterval(this.#timer);
    this.#timer = null;
    this.#histogram.disable();
  }

  #tick(): void {
    const now = this.#now();
    const drift = Math.max(0, now - this.#lastTickAt - this.#tickMs);
    this.#lastTickAt = now;
    // The histogram reports whole intervals (≈ resolution when idle); subtract it to get the delay.
    const histMax = this.#histogram.count > 0 ? Math.max(0, this.#histogram.max / 1e6 - this.#resolutionMs) : 0;
    this.#histogram.reset();
    const sample = Math.round(Math.max(drift, histMax));
    this.#samples[this.#next] = sample;
    this.#next = (this.#next + 1) % this.#samples.length;

    if (sample > this.#thresholdMs) {
      if (!this.#inEpisode) {
        this.#inEpisode = true;
        this.#episodes += 1;
        try {
          this.#onStall?.({ lagMs: sample, episodes: this.#episodes });
        } catch {
          // logging hooks must not break the guard
        }
      }
    } else {
      this.#inEpisode = false;
    }
  }
}
