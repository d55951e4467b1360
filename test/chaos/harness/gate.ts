/**
 * Limits how many keeper processes boot at once across every scenario of the process. A keeper's boot
 * (Node loading its modules) is the heaviest CPU burst of a scenario; twenty of them at once on two cores
 * would starve the keepers that hold leases, and the suite would measure the host, not the keeper.
 */
export class Gate {
  private busy = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly capacity: number) {}

  /** Resolves with the release function (idempotent) once a slot is free. */
  async acquire(): Promise<() => void> {
    if (this.busy >= this.capacity) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.busy++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.busy--;
    };
  }
}

export const bootGate = new Gate(Math.max(1, Number(process.env.CHAOS_BOOTS ?? 2)));
