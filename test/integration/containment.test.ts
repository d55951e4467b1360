/**
 * Containment with the real `bin/lease-keeper` against the emulator (leases of 2 s): a job that leaves a
 * setsid daemon behind which ignores SIGTERM. Whatever the end (the leader's own exit, a lost lease, a
 * self-fence, a SIGKILLed keeper), the daemon is dead before the item is reported, before the lease
 * deadline, or at the next keeper's start (the sweep). With cgroups (root here), through the environment
 * tag (the keeper run as `nobody`: no writable cgroups), and in a cgroup delegated to `nobody`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Emulator } from '../../src/emulator/index.js';
import { cgroup2MountPoint, cgroupMissing, prerequisite } from '../support/prerequisites.js';
import { integrationWorkerId } from '../support/processes.js';
import { BIN, ROOT, type Keeper, alive, emulator, sleep, startKeeper } from './support.js';

const NOBODY = 65534;
const OUTER_TMP = process.env.LK_TEST_OUTER_TMP ?? '/tmp';

/** Runs `args` as nobody; true when it exits 0. */
function asNobody(args: string[]): boolean {
  return spawnSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--', ...args], { stdio: 'ignore' }).status === 0;
}

/**
 * The keeper entry nobody can run. This checkout's own when nobody can read it; otherwise (a clone under a
 * 0700 directory) a world-readable staged copy of bin/, dist/ and the production node_modules, removed
 * after the file. Null with the reason when nobody cannot even execute node.
 */
let staged: string | null = null;
function nobodyBin(): { bin: string } | { missing: string } {
  if (process.getuid?.() !== 0) return { missing: 'not running as root' };
  if (!asNobody([process.execPath, '-e', '0'])) return { missing: `user nobody cannot execute ${process.execPath} (is a parent directory 0700?)` };
  if (asNobody([process.execPath, BIN, '--version'])) return { bin: BIN };
  if (staged === null) {
    staged = mkdtempSync(join(OUTER_TMP, 'lk-it-staged-'));
    chmodSync(staged, 0o755);
    const prod = execFileSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: ROOT, encoding: 'utf8' }).trim().split('\n');
    for (const dir of ['bin', 'dist', 'package.json', ...prod.map((p) => relative(ROOT, p)).filter((p) => p !== '')]) {
      cpSync(join(ROOT, dir), join(staged, dir), { recursive: true });
    }
    spawnSync('chmod', ['-R', 'a+rX', staged]);
  }
  const bin = join(staged, 'bin/lease-keeper');
  return asNobody([process.execPath, bin, '--version']) ? { bin } : { missing: `user nobody cannot run a staged copy in ${staged}` };
}

afterAll(() => {
  if (staged !== null) rmSync(staged, { recursive: true, force: true });
});
let emu: Emulator;
let dir: string;
let job: string;
const keepers: Keeper[] = [];
const cleanups: Array<() => void> = [];

beforeEach(async () => {
  emu = await emulator(2);
  // World-traversable (the keeper runs as nobody in some tests), under the outer tmp: the run's own is 0700.
  dir = mkdtempSync(join(process.env.LK_TEST_OUTER_TMP ?? '/tmp', 'lk-it-contain-'));
  chmodSync(dir, 0o777);
  job = join(dir, 'daemon-job.sh');
  // The daemon leaves the job's session and group, ignores SIGTERM, and records its pid (after setsid).
  writeFileSync(
    job,
    `#!/bin/bash
f="$DAEMON_DIR/$LEASE_KEEPER_WORK_ID.daemon"
setsid bash -c 'trap "" TERM; echo $$ > "$0.tmp"; mv "$0.tmp" "$0"; exec sleep 1000' "$f" < /dev/null > /dev/null 2>&1 &
while [ ! -s "$f" ]; do sleep 0.01; done
grep ^0:: /proc/self/cgroup > "$DAEMON_DIR/$LEASE_KEEPER_WORK_ID.cgroup"
[ "$JOB_LEADER" = exit ] && exit 0
trap 'exit 0' TERM
while true; do sleep 0.05; done
`,
    { mode: 0o755 },
  );
});

afterEach(async () => {
  try {
    await Promise.all(keepers.splice(0).map((k) => k.end()));
    // Daemons of keepers run as nobody keep LK_TEST_KEEPER too; a swept or escaped one is killed here anyway.
    for (const f of readdirSync(dir).filter((n) => n.endsWith('.daemon'))) {
      try {
        process.kill(Number(readFileSync(join(dir, f), 'utf8')), 'SIGKILL');
      } catch {
        // already dead: what the tests want
      }
    }
    for (const c of cleanups.splice(0).reverse()) c();
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await emu.close();
  }
});

function keeper(env: Record<string, string>, opts: { once?: boolean; asNobody?: boolean; cgroup?: string } = {}): Keeper {
  const bin = opts.asNobody ? nobodyKeeper : undefined;
  const k = startKeeper(emu, { command: [job], once: opts.once ?? true, env: { DAEMON_DIR: dir, ...env }, wrap: wrapper(opts), ...(bin ? { bin } : {}) });
  keepers.push(k);
  return k;
}

/** The keeper as nobody (setpriv, as systemd's User= would), optionally started inside `cgroup` first. */
function wrapper(opts: { asNobody?: boolean; cgroup?: string }): string[] {
  const w: string[] = [];
  if (opts.cgroup !== undefined) w.push('/bin/sh', '-c', 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', 'enter', opts.cgroup);
  if (opts.asNobody) w.push('setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--');
  return w;
}

async function daemonOf(workId: string): Promise<number> {
  const file = join(dir, `${workId}.daemon`);
  for (const until = Date.now() + 20_000; Date.now() < until; await sleep(20)) {
    if (existsSync(file)) return Number(readFileSync(file, 'utf8'));
  }
  throw new Error(`no daemon pid in ${file}`);
}

/** Resolves with the wall-clock time the process was first seen dead (polled every 5 ms). */
async function deathOf(pid: number, timeoutMs = 20_000): Promise<number> {
  for (const until = Date.now() + timeoutMs; Date.now() < until; await sleep(5)) if (!alive(pid)) return Date.now();
  throw new Error(`pid ${pid} still alive after ${timeoutMs} ms`);
}

function lastDeadline(workId: string): number {
  const beats = emu.events().filter((e) => e.type === 'heartbeat_accepted' && e.work_id === workId);
  return Number(beats[beats.length - 1]!.lease_expires_at_ms);
}

/** The same scenarios under each containment the keeper can pick. */
function scenarios(name: string, run: { env?: Record<string, string>; asNobody?: boolean; cgroup?: () => string }, kind: 'cgroup' | 'tag') {
  // One delegated cgroup per test, shared by its keepers (as a unit's cgroup is by its restarts).
  let cgroup: string | undefined;
  const start = (env: Record<string, string>, once = true): Keeper => {
    if (run.cgroup) cgroup ??= run.cgroup();
    return keeper({ ...run.env, ...env }, { once, ...(run.asNobody ? { asNobody: true } : {}), ...(cgroup ? { cgroup } : {}) });
  };

  describe(name, () => {
    beforeEach(() => {
      cgroup = undefined;
    });

    it('a leader that exits 0 leaving a daemon: the item is reported only once the daemon is dead', async () => {
      const [item] = emu.queue({ count: 1 });
      const k = start({ JOB_LEADER: 'exit' });
      const died = deathOf(await daemonOf(item!.id));
      expect((await k.exit()).code).toBe(0);
      const deadAt = await died;
      expect(k.lines.find((l) => l.msg === 'starting')).toMatchObject({ containment: kind });
      expect(k.lines.find((l) => l.msg === 'ready')).toMatchObject({ containment: kind });
      expect(k.msgs()).toContain('job_left_processes');
      const reports = emu.events().filter((e) => (e.type === 'metadata_updated' || e.type === 'stop_requested') && e.work_id === item!.id);
      expect(reports.length).toBeGreaterThanOrEqual(2);
      // The daemon ignored SIGTERM: it died of the SIGKILL after the 1 s grace, and only then was the item reported.
      for (const e of reports) expect(e.t_ms).toBeGreaterThanOrEqual(deadAt - 10);
      expect(emu.item(item!.id)).toMatchObject({ state: 'stopped', metadata: { outcome: 'completed', exit_code: '0' } });
    });

    it('a lost lease (takeover): the escaped daemon is dead before the old lease ran out', async () => {
      const [item] = emu.queue({ count: 1 });
      const k = start({ LEASE_KEEPER_STOP_GRACE_SECONDS: '10' });
      const died = deathOf(await daemonOf(item!.id));
      await k.waitForMsg('heartbeat');
      const deadline = lastDeadline(item!.id);
      emu.takeover(item!.id);
      expect((await k.exit()).code).toBe(75);
      expect(await died).toBeLessThan(deadline);
    });

    it('a self-fence (heartbeats hang): the escaped daemon is dead before the lease deadline', async () => {
      const [item] = emu.queue({ count: 1 });
      const k = start({ LEASE_KEEPER_STOP_GRACE_SECONDS: '10' });
      const died = deathOf(await daemonOf(item!.id));
      await k.waitForMsg('heartbeat');
      emu.injectFault({ endpoint: 'heartbeat', kind: 'hang', times: 0 });
      expect((await k.exit()).code).toBe(75);
      const deadAt = await died;
      expect(k.lines.some((l) => l.msg === 'fenced')).toBe(true);
      expect(deadAt).toBeLessThan(lastDeadline(item!.id));
    });

    it('a SIGKILLed keeper: the next keeper with the same worker id sweeps its daemon before polling; a live keeper\'s job is left alone', async () => {
      const workerId = integrationWorkerId(`sweep-${Math.random().toString(36).slice(2, 8)}`);
      const [first, second] = emu.queue({ count: 2 });
      const dead = start({ LEASE_KEEPER_WORKER_ID: workerId }, false);
      const orphan = await daemonOf(first!.id);
      dead.kill('SIGKILL');
      await dead.exited;
      await sleep(200);
      expect(alive(orphan)).toBe(true); // the parent-death signal reached the leader only

      const live = start({ LEASE_KEEPER_WORKER_ID: workerId }, false);
      const swept = await live.waitForMsg('swept_job');
      expect(swept).toMatchObject({ work_id: first!.id });
      await deathOf(orphan, 5_000);
      // `live` now runs the second item; one more keeper with the same id must not touch it.
      const liveDaemon = await daemonOf(second!.id);
      const third = start({ LEASE_KEEPER_WORKER_ID: workerId }, false);
      await third.waitForMsg('ready');
      await sleep(300);
      expect(third.msgs()).not.toContain('swept_job');
      expect(alive(liveDaemon)).toBe(true);
    });
  });
}

const cgroups = prerequisite('a writable cgroup v2 with cgroup.kill (root)', cgroupMissing());
if (cgroups) scenarios('cgroup containment (root)', {}, 'cgroup');

const nobody = nobodyBin();
const nobodyKeeper = 'bin' in nobody ? nobody.bin : undefined;
const root = prerequisite('root, and user nobody able to run the keeper', 'missing' in nobody ? nobody.missing : null);
if (root) scenarios('the environment-tag fallback (keeper as nobody, no writable cgroup)', { asNobody: true }, 'tag');

if (cgroups && root) {
  /** A cgroup handed to nobody as systemd's Delegate=yes would: the directory and its three delegated files. */
  const delegated = (): string => {
    const path = join(cgroup2MountPoint()!, `lk-it-delegated-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
    mkdirSync(path);
    for (const f of ['', 'cgroup.procs', 'cgroup.subtree_control', 'cgroup.threads']) chownSync(join(path, f), NOBODY, NOBODY);
    cleanups.push(() => removeCgroupTree(path));
    return path;
  };
  scenarios('cgroup containment in a cgroup delegated to an unprivileged keeper (nobody)', { asNobody: true, cgroup: delegated }, 'cgroup');

  describe('configuration', () => {
    it('LEASE_KEEPER_CONTAINMENT=cgroup where cgroups are not writable: exit 78 with the reason, nothing claimed', async () => {
      const [item] = emu.queue({ count: 1 });
      const k = keeper({ LEASE_KEEPER_CONTAINMENT: 'cgroup' }, { asNobody: true });
      expect((await k.exit()).code).toBe(78);
      expect(k.stderr).toMatch(/LEASE_KEEPER_CONTAINMENT \(--containment\) = "cgroup": cgroup containment is not possible here: .*not root/);
      expect(emu.item(item!.id).state).toBe('queued');
    });

    it('lease-keeper config says which containment run would use, and why', () => {
      const env = { PATH: process.env.PATH, QODER_PAT: 'pt-config-SECRET', QODER_ENVIRONMENT_ID: 'env_cfg' };
      const asRoot = spawnSync(process.execPath, [BIN, 'config'], { env, encoding: 'utf8' });
      expect(asRoot.status).toBe(0);
      expect(JSON.parse(asRoot.stdout)).toMatchObject({ containment: 'auto', containmentActive: 'cgroup', jobOomScoreAdj: 500 });
      const asNobody = spawnSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--', process.execPath, nobodyKeeper!, 'config'], { env, encoding: 'utf8' });
      expect(asNobody.status).toBe(0);
      expect(JSON.parse(asNobody.stdout)).toMatchObject({ containmentActive: 'tag', containmentReason: expect.stringContaining('no writable cgroup v2') });
    });

    it('a job limit without the controller is a configuration error (78) naming it', async () => {
      const k = keeper({ LEASE_KEEPER_JOB_MEMORY_MAX: '512M' });
      expect((await k.exit()).code).toBe(78);
      expect(k.stderr).toMatch(/LEASE_KEEPER_JOB_MEMORY_MAX \(--job-memory-max\): .*memory controller/);
    });

    it('the job sits in its own cgroup beside nothing of the keeper, and item_finished reports its CPU time', async () => {
      const [item] = emu.queue({ count: 1 });
      const k = keeper({ JOB_LEADER: 'exit', LEASE_KEEPER_STOP_GRACE_SECONDS: '0' });
      expect((await k.exit()).code).toBe(0);
      const cgroup = readFileSync(join(dir, `${item!.id}.cgroup`), 'utf8').trim();
      expect(cgroup).toMatch(new RegExp(`^0::/lease-keeper-it-r\\d+-[a-z0-9]+/job-${item!.id}-k\\d+-\\d+-1$`));
      const finished = k.lines.find((l) => l.msg === 'item_finished')!;
      expect(finished.cpu_seconds).toEqual(expect.any(Number));
      expect(emu.item(item!.id).metadata.cpu_seconds).toBe(String(finished.cpu_seconds));
      // The keeper removed the job cgroup and, on exit, its now empty parent.
      expect(existsSync(join(cgroup2MountPoint()!, cgroup.slice(3)))).toBe(false);
      expect(existsSync(join(cgroup2MountPoint()!, cgroup.slice(3).split('/')[1]!))).toBe(false);
    });
  });
}

function removeCgroupTree(path: string): void {
  if (!existsSync(path)) return;
  try {
    writeFileSync(join(path, 'cgroup.kill'), '1');
  } catch {
    // gone
  }
  for (const e of readdirSync(path, { withFileTypes: true })) if (e.isDirectory()) removeCgroupTree(join(path, e.name));
  for (let i = 0; i < 100; i++) {
    try {
      rmdirSync(path);
      return;
    } catch {
      spawnSync('sleep', ['0.02']);
    }
  }
}
