// Readings from /proc: CPU of a process and of its threads, memory, the whole machine's CPU, and the CPU
// of everything the benchmark itself started (so the load of other processes can be told apart).
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

export interface CpuTimes {
  user: number;
  sys: number;
  comm: string;
}

/** The fields of a /proc stat line after the command name (rest[0] is field 3, the state). */
function statFields(text: string): string[] {
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/** utime and stime of one process or thread (a process: all its threads, not its children), in seconds. */
export function cpuTimes(pid: number, tid: string | null = null): CpuTimes {
  const text = readFileSync(tid === null ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
  const rest = statFields(text);
  // utime is field 14, stime field 15.
  return { user: Number(rest[11]) / CLK_TCK, sys: Number(rest[12]) / CLK_TCK, comm: text.slice(text.indexOf('(') + 1, text.lastIndexOf(')')) };
}

/** utime + stime of one process (all its threads, not its children), in seconds. */
export function cpuSeconds(pid: number): number {
  const t = cpuTimes(pid);
  return t.user + t.sys;
}

/** CPU seconds per thread name (main thread = `main`; V8 and libuv helpers by their names). */
export function threadTimes(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const t = cpuTimes(pid, tid);
      const name = tid === String(pid) ? 'main' : t.comm;
      out[name] = (out[name] ?? 0) + t.user + t.sys;
    } catch {
      /* the thread ended */
    }
  }
  return out;
}

/**
 * Voluntary context switches of a process's main thread: how often it went to sleep waiting for work,
 * i.e. its wake-ups. Per request it shows how bunched the requests came (bunched ones share a wake-up).
 */
export function wakeups(pid: number): number {
  return Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/task/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}

/** VmHWM (peak) and VmRSS (current) in MB. */
export function memoryMb(pid: number): { hwm: number; rss: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { hwm: kb('VmHWM') / 1024, rss: kb('VmRSS') / 1024 };
}

export interface CpuReading {
  cpuSeconds: number;
  userSeconds: number;
  sysSeconds: number;
  wallSeconds: number;
  /** % of one core over the window. */
  pct: number;
  threads: Record<string, number>;
}

/** A CPU meter of one process over a wall-clock window. */
export function cpuMeter(pid: number): { read(): CpuReading } {
  const c0 = cpuTimes(pid);
  const th0 = threadTimes(pid);
  const t0 = performance.now();
  return {
    read() {
      const c = cpuTimes(pid);
      const th = threadTimes(pid);
      const wall = (performance.now() - t0) / 1000;
      const user = c.user - c0.user;
      const sys = c.sys - c0.sys;
      const threads: Record<string, number> = {};
      for (const [k, v] of Object.entries(th)) {
        const d = v - (th0[k] ?? 0);
        if (d > 0) threads[k] = Number(d.toFixed(2));
      }
      return { cpuSeconds: user + sys, userSeconds: user, sysSeconds: sys, wallSeconds: wall, pct: (100 * (user + sys)) / wall, threads };
    },
  };
}

/** Pids of the processes the benchmarks started (emulators, keepers, the baseline and floor loops). */
const tracked = new Set<number>();
export function track(pid: number | undefined): number {
  if (pid === undefined) throw new Error('spawn gave no pid');
  tracked.add(pid);
  return pid;
}

/** All four CPU fields (own + reaped children) of a /proc stat line, in seconds. */
function withChildren(path: string): number {
  const r = statFields(readFileSync(path, 'utf8'));
  return (Number(r[11]) + Number(r[12]) + Number(r[13]) + Number(r[14])) / CLK_TCK;
}

/**
 * CPU seconds used by the benchmark itself: this driver, and every process it started, with their
 * descendants (jobs) once reaped. Live tracked children are read directly; exited ones are already in
 * this process's cutime/cstime.
 */
export function ourCpuSeconds(): number {
  let total = withChildren('/proc/self/stat');
  for (const pid of tracked) {
    try {
      total += withChildren(`/proc/${pid}/stat`);
    } catch {
      tracked.delete(pid); // exited: counted in our cutime once reaped
    }
  }
  return total;
}

export interface SystemCpu {
  busy: number;
  total: number;
}

/** System-wide CPU counters (all cores) from /proc/stat, in seconds: busy and total. */
export function systemCpu(): SystemCpu {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0); // idle + iowait
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: (total - idle) / CLK_TCK, total: total / CLK_TCK };
}

/** Share of the whole machine (all cores) busy between two systemCpu() readings, in %. */
export const busyPct = (a: SystemCpu, b: SystemCpu): number => (100 * (b.busy - a.busy)) / Math.max(1e-9, b.total - a.total);

/**
 * Measures, over a window, the CPU that processes other than ours used: % of the whole machine
 * (all cores). Anything above a few % means the figures of that window were taken on a shared machine.
 */
export function foreignMeter(): { read(): number } {
  const s0 = systemCpu();
  const o0 = ourCpuSeconds();
  return {
    read() {
      const s1 = systemCpu();
      return (100 * Math.max(0, s1.busy - s0.busy - (ourCpuSeconds() - o0))) / Math.max(1e-9, s1.total - s0.total);
    },
  };
}

export const loadavg = (): number => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);

/** A kernel limit from /proc/sys (pid_max, threads-max), or null when unreadable. */
export function kernelLimit(path: string): number | null {
  try {
    return Number(readFileSync(`/proc/sys/${path}`, 'utf8').trim());
  } catch {
    return null;
  }
}
