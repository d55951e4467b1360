/**
 * Event-loop stall detection (anchors.md §4 item 7). A blocked loop delays every timer, including the heartbeat and
 * the self-fence timers, so lag is lease risk: the fence's SIGKILL is planned `margin` before the local deadline, and a
 * loop lagging by that much would fire it after the deadline.
 *
 * One source: a periodic (unref'd) tick that measures its own drift, i.e. how late the loop let it run. A stall of
 * length S that holds up a tick shows as a drift between S - tick (the stall began just after a tick) and S (it began
 * just as one was due); `lagMs()` also counts the time since the last tick, so a stall that another callback sees
 * before the guard's own late tick runs shows too. Each tick folds its drift into a ring of samples; `lagMs()` is the
 * max over the last `windowMs`.
 *
 * There used to be a second source, a `perf_hooks.monitorEventLoopDelay` histogram (50 ms resolution, beside a 100 ms
 * tick), which measured stalls more exactly between ticks. It was dropped for the idle cost: every histogram interval
 * and every tick wakes an idle keeper (bench/README.md "Idle CPU": a 10 ms histogram cost 0.40 % of a core, a 100 ms
 * tick 0.10 %). The price: a stall is under-reported by up to one tick (250 ms by default), and one that fits between
 * two ticks may not show at all (see `tickMs`). A stall shorter than the fence margin cannot make a fence late by
 * itself; what is lost is part of the early warning at half the margin, and only with the smallest margins.
 */
export interface StallGuardOptions {
  /**
   * Tick period of the drift check, ms. Default 250 (4 wake-ups a second when idle). A stall S is reported as at
   * least S - tickMs, so `stalled(margin)` is certain for any stall longer than tickMs + margin/2: 375 ms with the
   * smallest fence margin (250 ms), 1.25 s with the default one of a 60 s ttl (2 s). Shorter stalls are seen in
   * part, or not at all when they fit between two ticks.
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
  /** Timer functions; default the globals (tests may inject them to drive the ticks by hand). */
  timers?: { setInterval: typeof setInterval; clearInterval: typeof clearInterval };
}

export class StallGuard {
  readonly #tickMs: number;
  readonly #thresholdMs: number;
  readonly #now: () => number;
  readonly #onStall: StallGuardOptions['onStall'];
  readonly #clearInterval: typeof clearInterval;
  readonly #samples: number[];
  #next = 0;
  #lastTickAt: number;
  #timer: ReturnType<typeof setInterval> | null;
  #inEpisode = false;
  #episodes = 0;

  constructor(opts: StallGuardOptions = {}) {
    this.#tickMs = opts.tickMs ?? 250;
    this.#thresholdMs = opts.thresholdMs ?? 200;
    this.#now = opts.now ?? (() => performance.now());
    this.#onStall = opts.onStall;
    const timers = opts.timers ?? { setInterval: globalThis.setInterval, clearInterval: globalThis.clearInterval };
    this.#clearInterval = timers.clearInterval;
    this.#samples = new Array<number>(Math.max(1, Math.ceil((opts.windowMs ?? 5000) / this.#tickMs))).fill(0);
    this.#lastTickAt = this.#now();
    this.#timer = timers.setInterval(() => this.#tick(), this.#tickMs);
    (this.#timer as { unref?: () => void }).unref?.();
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

  /** Stops the tick. Idempotent. */
  stop(): void {
    if (!this.#timer) return;
    this.#clearInterval(this.#timer);
    this.#timer = null;
  }

  #tick(): void {
    const now = this.#now();
    const sample = Math.round(Math.max(0, now - this.#lastTickAt - this.#tickMs));
    this.#lastTickAt = now;
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
