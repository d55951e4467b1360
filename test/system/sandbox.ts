/**
 * A throwaway machine for the system tests: the host's own systemd booted as PID 1 in private namespaces
 * (pid, mount, uts, ipc, network with loopback only, cgroup), its root an overlay of / whose writes vanish
 * with it, the checkout bound in read-only at its own path. Root only.
 *
 * Everything a sandbox makes is named after one temp dir, `$TMPDIR/lk-system-<pid>-XXXXXX`: the cgroup
 * `<cgroup2 mount>/lk-system-<pid>-XXXXXX` holding every guest process, and the mounts, which exist only in the
 * guest's mount namespace (the host's mountinfo never shows them) and so go away with its last process.
 * `stop()` kills the cgroup (cgroup.kill), waits for it to empty, removes it and the temp dir. Nothing else is
 * needed: `exec`'d processes are in the guest's pid namespace, which the kernel empties when PID 1 dies.
 * If the test process dies first, the guest dies with it (a parent-death signal), at the latest after
 * `hardTimeoutS`, and the next `boot()` sweeps what is left of sandboxes whose owner is gone.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync, rmdirSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const GUEST_INIT = join(import.meta.dirname, 'guest-init.sh');
const SYSTEMD = '/lib/systemd/systemd';
const PREFIX = 'lk-system-';

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface BootOptions {
  /** Host directories made visible at the same path, read-only. */
  binds: string[];
  /** The guest is killed after this long whatever happens (default 180 s). */
  hardTimeoutS?: number;
  /** How long to wait for `systemctl is-system-running` (default 20 s). */
  bootTimeoutMs?: number;
}

/** Where cgroup v2 is mounted on the host (`/sys/fs/cgroup/unified` on a hybrid host), or null. */
export function cgroup2Mount(): string | null {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-');
    if (dash > 0 && f[dash + 1] === 'cgroup2') return f[4]!;
  }
  return null;
}

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** null when this machine can boot a sandbox, else why not. */
export function sandboxMissing(): string | null {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'not running as root';
  for (const cmd of ['unshare', 'nsenter', 'setpriv', 'timeout', 'useradd', 'curl']) if (!onPath(cmd)) return `${cmd} is not installed`;
  if (!existsSync(SYSTEMD)) return `no ${SYSTEMD} (apt-get install systemd)`;
  const cg = cgroup2Mount();
  if (cg === null) return 'no cgroup v2 mount';
  const [major = 0, minor = 0] = release().split('.').map(Number);
  if (major < 5 || (major === 5 && minor < 14)) return `Linux ${release()} has no cgroup.kill (5.14 or later needed)`;
  if (!readFileSync('/proc/filesystems', 'utf8').includes('overlay')) return 'no overlayfs in /proc/filesystems';
  // Root in a container without CAP_SYS_ADMIN has all of the above and still cannot make namespaces.
  const probe = spawnSync('unshare', ['--pid', '--fork', '--mount', '--uts', '--ipc', '--net', '--cgroup', 'true'], { encoding: 'utf8' });
  if (probe.status !== 0) return `unshare cannot create namespaces here: ${(probe.stderr ?? '').trim() || `exit ${probe.status}`}`;
  return null;
}

/** The systemd version the sandbox would boot (e.g. 252), or NaN. */
export function systemdVersion(): number {
  const r = spawnSync(SYSTEMD, ['--version'], { encoding: 'utf8' });
  return Number(/systemd (\d+)/.exec(r.stdout ?? '')?.[1] ?? NaN);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function read(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/** Kills every process in the cgroup tree and removes it; true when it is gone. Synchronous (exit handler). */
function removeCgroupSync(cg: string, waitMs = 5000): boolean {
  if (!existsSync(cg)) return true;
  try {
    writeFileSync(join(cg, 'cgroup.kill'), '1');
  } catch {
    /* already empty, or being removed */
  }
  const until = Date.now() + waitMs;
  while (Date.now() < until && /populated 1/.test(read(join(cg, 'cgroup.events')) ?? '')) {
    spawnSync('sleep', ['0.02']);
  }
  const removeTree = (dir: string): void => {
    let entries: string[] = [];
    try {
      entries = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch {
      return;
    }
    for (const e of entries) removeTree(join(dir, e));
    try {
      rmdirSync(dir);
    } catch {
      /* reported by the existsSync below */
    }
  };
  removeTree(cg);
  return !existsSync(cg);
}

/**
 * Removes what sandboxes of dead test processes left behind (a runner killed with SIGKILL cannot clean up):
 * their cgroups and temp dirs. The owner's pid is part of the name (`lk-system-<pid>-XXXXXX`), so a run never
 * touches the sandboxes of another live run, whatever its TMPDIR.
 */
export function sweepStale(): string[] {
  const cg2 = cgroup2Mount();
  const swept: string[] = [];
  const stale = (n: string): boolean => {
    const owner = Number(/^lk-system-(\d+)-/.exec(n)?.[1] ?? NaN);
    return n.startsWith(PREFIX) && Number.isInteger(owner) && !alive(owner);
  };
  if (cg2) {
    for (const n of safeList(cg2).filter(stale)) {
      removeCgroupSync(join(cg2, n));
      swept.push(join(cg2, n));
    }
  }
  for (const n of safeList(tmpdir()).filter(stale)) {
    rmSync(join(tmpdir(), n), { recursive: true, force: true });
    swept.push(join(tmpdir(), n));
  }
  return swept;
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** What is left on the host of the sandboxes this process made: cgroups, temp dirs, mounts. */
export function leftovers(): string[] {
  const cg2 = cgroup2Mount();
  const mine = `${PREFIX}${process.pid}-`;
  const found: string[] = [];
  for (const n of safeList(tmpdir())) if (n.startsWith(mine)) found.push(join(tmpdir(), n));
  if (cg2) for (const n of safeList(cg2)) if (n.startsWith(mine)) found.push(join(cg2, n));
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) if (line.includes(PREFIX)) found.push(`mount: ${line}`);
  return found;
}

const live = new Set<Sandbox>();
// Last resort when the runner exits without afterAll (an uncaught error): kill and remove synchronously.
process.once('exit', () => {
  for (const sb of live) sb.stopSync();
});

export class Sandbox {
  private readonly execs = new Set<ChildProcess>();
  private stopped = false;

  private constructor(
    readonly name: string,
    readonly dir: string,
    readonly cgroup: string,
    private readonly launcher: ChildProcess,
    readonly guestPid: number,
  ) {}

  /** Boots a fresh guest and waits until its systemd reports `running` (or `degraded`). */
  static async boot(opts: BootOptions): Promise<Sandbox> {
    const missing = sandboxMissing();
    if (missing !== null) throw new Error(`cannot boot a systemd sandbox: ${missing}`);
    sweepStale();
    const cg2 = cgroup2Mount()!;
    const dir = mkdtempSync(join(tmpdir(), `${PREFIX}${process.pid}-`));
    const name = basename(dir);
    mkdirSync(join(dir, 'mnt'));
    const cgroup = join(cg2, name);
    mkdirSync(cgroup);
    const log = openSync(join(dir, 'launcher.log'), 'w');
    const hard = String(opts.hardTimeoutS ?? 180);
    // timeout -> unshare -> [PID 1: guest-init.sh stage1 -> stage2 -> setpriv -> env -> systemd], each of the
    // first two with a parent-death SIGKILL (setpriv; kept across exec): when this process dies, timeout dies,
    // then unshare. SIGKILL because unshare --fork blocks SIGTERM while it waits. timeout's SIGKILL at the
    // hard limit also ends unshare. When unshare dies, PID 1 gets SIGKILL (--kill-child) and the kernel
    // empties the namespace; what that leaves (an empty cgroup, the temp dir) is swept by the next boot().
    const launcher = spawn(
      'setpriv',
      ['--pdeathsig', 'KILL', 'timeout', '-s', 'KILL', hard, 'setpriv', '--pdeathsig', 'KILL', 'unshare', '--pid', '--fork', '--kill-child=SIGKILL', '--mount', '--propagation', 'private', '--uts', '--ipc', '--net',
        GUEST_INIT, 'stage1', cgroup, dir, name.replace(/_/g, '-'), ...opts.binds],
      { stdio: ['ignore', log, log], detached: true },
    );
    closeSync(log);
    launcher.unref();
    const fail = async (why: string): Promise<never> => {
      const tail = (read(join(dir, 'launcher.log')) ?? '').trim().split('\n').slice(-5).join('\n');
      removeCgroupSync(cgroup);
      killGroup(launcher);
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`systemd sandbox: ${why}\n${tail}`);
    };
    let guest = 0;
    for (let i = 0; i < 200 && guest === 0; i++) {
      guest = findGuest(launcher.pid!);
      if (guest === 0) await sleep(25);
    }
    if (guest === 0) return fail('the guest systemd did not start');
    const sb = new Sandbox(name, dir, cgroup, launcher, guest);
    live.add(sb);
    const until = Date.now() + (opts.bootTimeoutMs ?? 20_000);
    let state = '';
    while (Date.now() < until) {
      state = (await sb.exec(['systemctl', 'is-system-running'], { timeoutMs: 5000 })).stdout.trim();
      if (state === 'running' || state === 'degraded') return sb;
      await sleep(50);
    }
    await sb.stop();
    return fail(`the guest did not finish booting (state "${state}")`);
  }

  /** Runs a command inside the guest (all its namespaces) as root. Never rejects for a non-zero exit. */
  exec(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
    if (this.stopped) return Promise.reject(new Error(`sandbox ${this.name} is stopped`));
    const child = spawn('nsenter', ['-t', String(this.guestPid), '-a', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.execs.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
    const timeoutMs = opts.timeoutMs ?? 30_000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`in the sandbox, ${args.join(' ')} did not finish within ${timeoutMs} ms\n${stdout}\n${stderr}`));
      }, timeoutMs);
      child.on('error', (err) => {
        clearTimeout(timer);
        this.execs.delete(child);
        reject(err);
      });
      child.on('close', (code) => {
        clearTimeout(timer);
        this.execs.delete(child);
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** `bash -c script` inside the guest; rejects on a non-zero exit, with its output. */
  async sh(script: string, opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
    const r = await this.exec(['bash', '-c', script], opts);
    if (r.code !== 0) throw new Error(`in the sandbox, exit ${r.code}: ${script}\n${r.stdout}${r.stderr}`);
    return r.stdout;
  }

  /** Writes a file inside the guest (parent directories created), with this mode. */
  async write(path: string, content: string, mode = '0644'): Promise<void> {
    const r = await this.exec(['sh', '-c', 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"', 'sh', path, mode], { input: content });
    if (r.code !== 0) throw new Error(`in the sandbox, cannot write ${path}: ${r.stderr}`);
  }

  /** Kills every guest process, removes the cgroup and the temp dir. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopSync();
    // The launcher (timeout, unshare) exits once PID 1 is gone; wait for it so no zombie or process stays.
    const until = Date.now() + 5000;
    while (Date.now() < until && (this.launcher.exitCode === null && this.launcher.signalCode === null) && alive(this.launcher.pid!)) await sleep(20);
  }

  stopSync(): void {
    if (this.stopped) return;
    this.stopped = true;
    live.delete(this);
    const gone = removeCgroupSync(this.cgroup);
    for (const c of this.execs) c.kill('SIGKILL');
    killGroup(this.launcher);
    rmSync(this.dir, { recursive: true, force: true });
    if (!gone) throw new Error(`systemd sandbox: ${this.cgroup} could not be removed`);
  }
}

function killGroup(child: ChildProcess): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

/** The guest's PID 1 (host pid): the launcher's grandchild once it is systemd. 0 while not there yet. */
function findGuest(timeoutPid: number): number {
  const children = (pid: number): number[] =>
    (read(`/proc/${pid}/task/${pid}/children`) ?? '').trim().split(/\s+/).filter(Boolean).map(Number);
  for (const u of children(timeoutPid)) {
    for (const g of children(u)) {
      if ((read(`/proc/${g}/comm`) ?? '').trim() === 'systemd') return g;
    }
  }
  return 0;
}

