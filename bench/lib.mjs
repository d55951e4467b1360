// Shared helpers of the benchmark driver: the emulator in its own process, keepers spawned from
// bin/lease-keeper, /proc sampling, log tailing, statistics. Plain ESM, no dependencies.
import { spawn, execFileSync } from 'node:child_process';
import { closeSync, copyFileSync, cpSync, existsSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, statSync, symlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

/** A sleep that does not keep the process alive (for races against a child's exit). */
const idleSleep = (ms) => new Promise((r) => setTimeout(r, ms).unref());
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** The keeper executable every benchmark runs; snapshotBuild() points it at a private copy. */
export const paths = { bin: join(ROOT, 'bin/lease-keeper'), dist: join(ROOT, 'dist') };

/**
 * Copies bin/ and dist/ (with package.json, node_modules linked) to `dir` and runs everything from
 * there: others may rebuild dist/ while a run is in progress, and every benchmark must run one build.
 */
export function snapshotBuild(dir) {
  mkdirSync(dir, { recursive: true });
  cpSync(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true });
  cpSync(join(ROOT, 'bin'), join(dir, 'bin'), { recursive: true });
  copyFileSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  paths.bin = join(dir, 'bin/lease-keeper');
  paths.dist = join(dir, 'dist');
}
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

// ---------------------------------------------------------------- /proc

/** utime and stime of one process or thread (a process: all its threads, not its children), in seconds. */
export function cpuTimes(pid, tid = null) {
  const text = readFileSync(tid === null ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime is field 14, stime field 15.
  return { user: Number(rest[11]) / CLK_TCK, sys: Number(rest[12]) / CLK_TCK, comm: text.slice(text.indexOf('(') + 1, text.lastIndexOf(')')) };
}

/** utime + stime of one process (all its threads, not its children), in seconds. */
export function cpuSeconds(pid) {
  const t = cpuTimes(pid);
  return t.user + t.sys;
}

/** CPU seconds per thread name (main thread = the process name, `node`; V8 and libuv helpers by name). */
export function threadTimes(pid) {
  const out = {};
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

/** VmHWM (peak) and VmRSS (current) in MB. */
export function memoryMb(pid) {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { hwm: kb('VmHWM') / 1024, rss: kb('VmRSS') / 1024 };
}

/** A CPU meter over a wall-clock window. */
export function cpuMeter(pid) {
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
      const threads = {};
      for (const [k, v] of Object.entries(th)) {
        const d = v - (th0[k] ?? 0);
        if (d > 0) threads[k] = Number(d.toFixed(2));
      }
      return { cpuSeconds: user + sys, userSeconds: user, sysSeconds: sys, wallSeconds: wall, pct: (100 * (user + sys)) / wall, threads };
    },
  };
}

/** Pids of the processes the benchmarks started (emulators, keepers, the baseline). */
const tracked = new Set();
export const track = (pid) => (tracked.add(pid), pid);

/** All four CPU fields (own + reaped children) of a /proc stat line, in seconds. */
function withChildren(path) {
  const text = readFileSync(path, 'utf8');
  const r = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return (Number(r[11]) + Number(r[12]) + Number(r[13]) + Number(r[14])) / CLK_TCK;
}

/**
 * CPU seconds used by the benchmark itself: this driver, and every process it started, with their
 * descendants (jobs) once reaped. Live tracked children are read directly; exited ones are already in
 * this process's cutime/cstime.
 */
export function ourCpuSeconds() {
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

/**
 * Measures, over a window, the CPU that processes other than ours used: % of the whole machine
 * (all cores). Anything above a few % means the figures of that window were taken on a shared machine.
 */
export function foreignMeter() {
  const s0 = systemCpu();
  const o0 = ourCpuSeconds();
  return {
    read() {
      const s1 = systemCpu();
      return (100 * Math.max(0, s1.busy - s0.busy - (ourCpuSeconds() - o0))) / Math.max(1e-9, s1.total - s0.total);
    },
  };
}

/** System-wide CPU counters (all cores) from /proc/stat, in seconds: busy and total. */
export function systemCpu() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + (f[4] ?? 0); // idle + iowait
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: (total - idle) / CLK_TCK, total: total / CLK_TCK };
}

/** Share of the whole machine (all cores) busy between two systemCpu() readings, in %. */
export const busyPct = (a, b) => (100 * (b.busy - a.busy)) / Math.max(1e-9, b.total - a.total);

export const loadavg = () => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);

/** Newest modification time under dist/: the build the keepers run. */
export function distStamp() {
  let newest = 0;
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  walk(join(ROOT, 'dist'));
  return newest;
}

/** The commit checked out, and whether src/ differs from it (others may be editing it). */
export function gitState() {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
    return { commit, src_dirty: dirty };
  } catch {
    return { commit: null, src_dirty: null };
  }
}

export function machine() {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown';
  let nproc;
  try {
    nproc = Number(execFileSync('nproc', { encoding: 'utf8' }).trim());
  } catch {
    nproc = null;
  }
  return { node: process.version, cores: nproc, cpu_model: model, kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim() };
}

// ---------------------------------------------------------------- statistics

/** Nearest-rank percentile of a numeric array (p in 0..100). */
export function percentile(values, p) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1];
}

export const round = (v, digits = 1) => (v === null || v === undefined || Number.isNaN(v) ? null : Number(v.toFixed(digits)));

export function summary(values, digits = 1) {
  if (values.length === 0) return { n: 0, p50: null, p99: null, max: null, min: null };
  return {
    n: values.length,
    min: round(Math.min(...values), digits),
    p50: round(percentile(values, 50), digits),
    p90: round(percentile(values, 90), digits),
    p99: round(percentile(values, 99), digits),
    max: round(Math.max(...values), digits),
  };
}

// ---------------------------------------------------------------- emulator (own process)

/**
 * `node bin/lease-keeper emulator --port 0 --ttl-override N` in its own process; its event log on stderr
 * goes to /dev/null (the admin API has it all). Returns the url, an admin client and stop().
 */
export async function startEmulatorProcess({ ttlOverride = 10 } = {}) {
  const child = spawn(process.execPath, [paths.bin, 'emulator', '--port', '0', '--ttl-override', String(ttlOverride)], {
    stdio: ['ignore', 'pipe', 'ignore'],
    env: { PATH: process.env.PATH, HOME: process.env.HOME },
  });
  const line = await new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('emulator did not print its listening line within 10 s')), 10_000);
    child.stdout.on('data', (c) => {
      buf += c.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(buf.slice(0, nl));
      }
    });
    child.once('exit', (code) => reject(new Error(`emulator exited with ${code} before listening`)));
  });
  const info = JSON.parse(line);
  const exited = new Promise((r) => child.once('exit', r));
  track(child.pid);
  return {
    pid: child.pid,
    url: info.url,
    token: info.token ?? 'pt-emulator',
    environmentId: info.environment_id,
    admin: adminClient(info.url),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await Promise.race([exited, idleSleep(3000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

/** The emulator's admin API over HTTP (docs/emulator.md). */
export function adminClient(url) {
  const base = `${url}/_admin`;
  const call = async (method, path, body) => {
    const res = await fetch(base + path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`admin ${method} ${path}: ${res.status} ${text}`);
    return JSON.parse(text);
  };
  return {
    queue: async (count) => {
      const items = [];
      for (let left = count; left > 0; left -= 1000) items.push(...(await call('POST', '/items', { count: Math.min(1000, left) })).items);
      return items;
    },
    items: async () => (await call('GET', '/items')).items,
    stop: (id, force = false) => call('POST', `/items/${id}/stop`, { force }),
    takeover: (id) => call('POST', `/items/${id}/takeover`, {}),
    fault: (spec) => call('POST', '/faults', spec),
    clearFaults: () => call('DELETE', '/faults'),
    settings: (patch) => call('POST', '/settings', patch),
    reset: () => call('POST', '/reset'),
    stats: () => call('GET', '/stats'),
    lastSeq: async () => (await call('GET', '/events?since=999999999999')).last_seq,
    events: async (since = 0) => (await call('GET', `/events?since=${since}`)).events,
  };
}

// ---------------------------------------------------------------- keepers

/**
 * Spawns `bin/lease-keeper run -- <command>` (the executable itself, as a user would), its stdout and
 * stderr (pino JSON lines, and the jobs' inherited output) going to `logFile`.
 */
export function spawnKeeper(emu, { workerId, concurrency = 1, command, logFile, env = {}, nodeArgs }) {
  mkdirSync(dirname(logFile), { recursive: true });
  const fd = openSync(logFile, 'w');
  const fullEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    QODER_API_URL: emu.url,
    QODER_PAT: emu.token,
    QODER_ENVIRONMENT_ID: emu.environmentId,
    LEASE_KEEPER_WORKER_ID: workerId,
    LEASE_KEEPER_CONCURRENCY: String(concurrency),
    LEASE_KEEPER_LOG_LEVEL: 'info',
    ...env,
  };
  const spawnedAt = Date.now();
  // `nodeArgs` (e.g. --cpu-prof, not allowed in NODE_OPTIONS): run node with them on the same script.
  const [file, argv] = nodeArgs ? [process.execPath, [...nodeArgs, paths.bin]] : [paths.bin, []];
  const child = spawn(file, [...argv, 'run', '--', ...command], { env: fullEnv, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  track(child.pid);
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  const handle = {
    pid: child.pid,
    workerId,
    logFile,
    spawnedAt,
    exited,
    tail: new LogTail(logFile),
    alive: () => child.exitCode === null && child.signalCode === null,
    signal(sig) {
      if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    },
    /** SIGTERM (drain), then a second one (kill the job groups, exit at once), then SIGKILL. */
    async stop({ drainMs = 0, timeoutMs = 15_000 } = {}) {
      this.signal('SIGTERM');
      if (drainMs > 0) await Promise.race([exited, idleSleep(drainMs)]);
      this.signal('SIGTERM');
      const r = await Promise.race([exited, idleSleep(timeoutMs).then(() => null)]);
      if (r === null) {
        this.signal('SIGKILL');
        return exited;
      }
      return r;
    },
  };
  liveKeepers.add(handle);
  void exited.then(() => liveKeepers.delete(handle));
  return handle;
}

const liveKeepers = new Set();

/** Stops every keeper still running (after a failure): each kills its job groups on the second SIGTERM. */
export async function stopAllKeepers() {
  await Promise.all([...liveKeepers].map((k) => k.stop({ timeoutMs: 5000 })));
}

/** Reads a growing file of JSON lines incrementally. */
export class LogTail {
  constructor(file) {
    this.file = file;
    this.offset = 0;
    this.partial = '';
    this.lines = [];
  }
  poll() {
    if (!existsSync(this.file)) return [];
    const fd = openSync(this.file, 'r');
    const fresh = [];
    try {
      const size = fstatSync(fd).size;
      if (size > this.offset) {
        const buf = Buffer.alloc(size - this.offset);
        readSync(fd, buf, 0, buf.length, this.offset);
        this.offset = size;
        const parts = (this.partial + buf.toString('utf8')).split('\n');
        this.partial = parts.pop();
        for (const raw of parts) {
          if (!raw.startsWith('{')) continue;
          try {
            const l = JSON.parse(raw);
            this.lines.push(l);
            fresh.push(l);
          } catch {
            /* a job's own output */
          }
        }
      }
    } finally {
      closeSync(fd);
    }
    return fresh;
  }
  count(msg) {
    return this.lines.filter((l) => l.msg === msg).length;
  }
}

/** Polls `check` every `everyMs` until it returns a truthy value; throws after timeoutMs. */
export async function waitUntil(check, { timeoutMs = 30_000, everyMs = 50, what = 'condition' } = {}) {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Milliseconds since the epoch of a pino ISO `time`. */
export const logMs = (line) => Date.parse(line.time);
