import { scanGroups, type GroupScan } from './group-members.js';

/**
 * A group being watched for survivors. `look` gets the tick's shared /proc scan (taken on first use, at
 * most once per tick) and returns true when the group is empty, which ends its watch.
 */
export interface SurvivorWatch {
  look(scan: () => GroupScan | null): boolean;
}

/**
 * Looks for survivors of every watched group on one shared timer, so that groups needing a /proc scan
 * share one scan per tick instead of each doing its own (a mass stop ends hundreds of jobs within a
 * second, and one scan blocks the event loop for ~12 ms with ~800 processes on the machine).
 *
 * A group's first look comes right after the current event-loop phase, together with every group added in
 * that phase (exits reported together look together); later looks every `pollMs`, all on the same tick.
 * Every look, and so every scan, happens after the looking groups' leaders were reported exited, which is
 * what makes a scan's "no live member" final for them. The timer keeps the event loop alive while any
 * group is watched.
 */
export class SurvivorPoll {
  readonly #pollMs: number;
  readonly #scan: () => GroupScan | null;
  readonly #first = new Set<SurvivorWatch>();
  readonly #polled = new Set<SurvivorWatch>();
  #immediate: NodeJS.Immediate | null = null;
  #timer: NodeJS.Timeout | null = null;

  constructor(pollMs: number, scan: () => GroupScan | null = scanGroups) {
    this.#pollMs = pollMs;
    this.#scan = scan;
  }

  /** Number of groups being watched. */
  get size(): number {
    return this.#first.size + this.#polled.size;
  }

  /** Watches `watch` until its look returns true. */
  add(watch: SurvivorWatch): void {
    this.#first.add(watch);
    this.#immediate ??= setImmediate(() => {
      this.#immediate = null;
      const batch = [...this.#first];
      this.#first.clear();
      this.#lookAt(batch);
    });
  }

  #lookAt(watches: readonly SurvivorWatch[]): void {
    let scanned: GroupScan | null | undefined;
    const scan = (): GroupScan | null => (scanned === undefined ? (scanned = this.#scan()) : scanned);
    for (const watch of watches) {
      let done = false;
      try {
        done = watch.look(scan);
      } catch (err) {
        // Not expected (looks do not throw); do not let one group stop the others' watch.
        process.nextTick(() => {
          throw err;
        });
      }
      if (done) this.#polled.delete(watch);
      else this.#polled.add(watch);
    }
    if (this.#timer === null && this.#polled.size > 0) {
      this.#timer = setTimeout(() => {
        this.#timer = null;
        this.#lookAt([...this.#polled]);
      }, this.#pollMs);
    }
  }
}
