/**
 * When a job gets its SIGKILL: one timer, only ever brought forward (a shorter grace or a fence moves it
 * earlier; nothing postpones it). Shared by every containment, which each decide what "kill" means.
 */
export class KillDeadline {
  #atMs = Infinity;
  #timer: NodeJS.Timeout | null = null;
  readonly #kill: () => void;

  constructor(kill: () => void) {
    this.#kill = kill;
  }

  /** The performance.now() time of the SIGKILL, Infinity while none is set. */
  get atMs(): number {
    return this.#atMs;
  }

  /** Kills at `atMs` (performance.now() time) unless a kill is already due by then. */
  bringForward(atMs: number): void {
    if (atMs >= this.#atMs) return;
    this.#atMs = atMs;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#kill();
    }, Math.max(0, atMs - performance.now()));
  }

  /** The job is gone: no kill any more. */
  cancel(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }
}
