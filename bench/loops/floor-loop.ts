// The floor of turnover: a bare loop that makes the keeper's calls for each item and spawns the same job
// the same way (its own process group, under setpriv --pdeathsig when installed, the item's variables in
// its environment), with no keeper logic: no lease machine, no heartbeats after the first, no fence, no
// group watch after the leader's exit, no retries, no logging, no metrics. Its CPU per item is what the
// calls and the spawn cost at least; the keeper's minus it is what the keeper's own logic costs.
//
//   node --import tsx bench/loops/floor-loop.ts <url> <token> <environment_id> <mode> <n> <lanes> <containment> -- <command...>
//
// containment `process-group`: the job leads its own process group (setpriv --pdeathsig, detached).
// containment `cgroup`: as the keeper's cgroup containment does at least: a cgroup per job (mkdir), the
//   job entered into it by the keeper's own /bin/sh launcher, `populated 0` read after the exit, rmdir.
//
// mode `short`: `lanes` loops, each: poll -> ack -> heartbeat (NO_HEARTBEAT) -> spawn -> wait for the exit
//   -> report (metadata, stop, confirm), until stdin says `stop`. Prints {"ready":true} at once, and on
//   stdin `count` prints {"finished": n} (items reported so far).
// mode `fill`: claims `n` items with `lanes` claims in flight (poll -> ack -> heartbeat -> spawn), prints
//   {"filled":n,"ms":...} when every job runs; on stdin `drain`: SIGTERM to every group, each item reported
//   once its job exited, then {"drained":n,"ms":...}.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { cgroup2Mount, LAUNCHER_SCRIPT, LAUNCHER_SHELL } from '../../src/job/cgroup.js';
import { BareApi, say, stayUntilKilled, stdinLines } from './api.js';

const [url = '', token = '', envId = '', mode = 'short', nArg = '0', lanesArg = '1', containment = 'process-group', sep, ...command] = process.argv.slice(2);
if (sep !== '--' || command.length === 0) throw new Error('usage: floor-loop.ts <url> <token> <env> <short|fill> <n> <lanes> <process-group|cgroup> -- <command...>');
const N = Number(nArg);
const LANES = Number(lanesArg);
const api = new BareApi(url, token, envId, `bench-floor-${mode}`);
const nextLine = stdinLines();

const setpriv = ((): string | null => {
  try {
    accessSync('/usr/bin/setpriv', constants.X_OK);
    return '/usr/bin/setpriv';
  } catch {
    return null;
  }
})();
const cgroupParent = ((): string | null => {
  if (containment !== 'cgroup') return null;
  const mount = cgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8'));
  if (mount === null) throw new Error('floor: no cgroup2 mount');
  const dir = join(mount, `lk-floor-${process.pid}`);
  mkdirSync(dir);
  return dir;
})();
let runs = 0;

interface Job {
  child: ChildProcess;
  cgroup: string | null;
}

function start(item: { id: string }): Job {
  const env = { ...process.env, LEASE_KEEPER_WORK_ID: item.id, LEASE_KEEPER_WORK: JSON.stringify(item) };
  const cgroup = cgroupParent === null ? null : join(cgroupParent, `job-${++runs}`);
  if (cgroup !== null) mkdirSync(cgroup);
  const job = cgroup === null ? command : [LAUNCHER_SHELL, '-c', LAUNCHER_SCRIPT, 'floor-launch', cgroup, '-', ...command];
  const [file, args] = setpriv ? [setpriv, ['--pdeathsig', 'SIGKILL', '--', ...job]] : [job[0]!, job.slice(1)];
  return { child: spawn(file, args, { detached: true, stdio: 'inherit', env }), cgroup };
}

/** The leader's exit code; with a cgroup, once it is empty (one read of cgroup.events) and removed. */
const exited = (job: Job): Promise<number | null> =>
  new Promise<number | null>((r) => job.child.once('exit', (code) => r(code))).then((code) => {
    if (job.cgroup !== null) {
      if (/^populated 1$/m.test(readFileSync(join(job.cgroup, 'cgroup.events'), 'utf8'))) throw new Error(`floor: ${job.cgroup} still populated`);
      rmdirSync(job.cgroup);
    }
    return code;
  });

/** The floor's cgroup parent, once every job's cgroup is gone (the driver also removes it after a failure). */
function removeParent(): void {
  if (cgroupParent !== null) rmdirSync(cgroupParent);
}

function signal(job: Job, sig: NodeJS.Signals): void {
  if (job.child.pid !== undefined) process.kill(-job.child.pid, sig);
}

/** poll -> ack -> first heartbeat; null when the poll came back empty. */
async function claim(): Promise<{ id: string } | null> {
  const item = await api.poll(999);
  if (item === null) return null;
  await api.ack(item.id);
  await api.heartbeat(item.id, 'NO_HEARTBEAT');
  return item;
}

if (mode === 'short') {
  let finished = 0;
  let stopping = false;
  const lane = async (): Promise<void> => {
    while (!stopping) {
      const item = await claim();
      if (item === null) continue;
      const code = await exited(start(item));
      await api.report(item.id, { 'lease-keeper.outcome': 'completed', 'lease-keeper.exit-code': String(code ?? -1) });
      finished++;
    }
  };
  const lanes = Promise.all(Array.from({ length: LANES }, lane));
  say({ ready: true });
  for (;;) {
    const line = await nextLine();
    if (line === 'count') say({ finished });
    if (line === 'stop') break;
  }
  stopping = true;
  await lanes;
  removeParent();
  say({ stopped: true, finished });
} else {
  const t0 = performance.now();
  const jobs: { id: string; job: Job; exit: Promise<number | null> }[] = [];
  const lane = async (): Promise<void> => {
    while (jobs.length < N) {
      const item = await claim();
      if (item === null) continue;
      const job = start(item);
      jobs.push({ id: item.id, job, exit: exited(job) });
    }
  };
  await Promise.all(Array.from({ length: LANES }, lane));
  say({ filled: jobs.length, ms: performance.now() - t0 });
  await nextLine(); // drain
  const t1 = performance.now();
  for (const j of jobs) signal(j.job, 'SIGTERM');
  await Promise.all(jobs.map(async (j) => api.report(j.id, { 'lease-keeper.outcome': 'stopped', 'lease-keeper.exit-code': String((await j.exit) ?? -1) })));
  const ms = performance.now() - t1;
  removeParent();
  say({ drained: jobs.length, ms });
}
await api.close();
stayUntilKilled();
