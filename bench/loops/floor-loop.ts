// The floor of turnover: a bare loop that makes the keeper's calls for each item and spawns the same job
// the same way (its own process group, under setpriv --pdeathsig when installed, the item's variables in
// its environment), with no keeper logic: no lease machine, no heartbeats after the first, no fence, no
// group watch after the leader's exit, no retries, no logging, no metrics. Its CPU per item is what the
// calls and the spawn cost at least; the keeper's minus it is what the keeper's own logic costs.
//
//   node --import tsx bench/loops/floor-loop.ts <url> <token> <environment_id> <mode> <n> <lanes> -- <command...>
//
// mode `short`: `lanes` loops, each: poll -> ack -> heartbeat (NO_HEARTBEAT) -> spawn -> wait for the exit
//   -> report (metadata, stop, confirm), until stdin says `stop`. Prints {"ready":true} at once, and on
//   stdin `count` prints {"finished": n} (items reported so far).
// mode `fill`: claims `n` items with `lanes` claims in flight (poll -> ack -> heartbeat -> spawn), prints
//   {"filled":n,"ms":...} when every job runs; on stdin `drain`: SIGTERM to every group, each item reported
//   once its job exited, then {"drained":n,"ms":...}.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { BareApi, say, stayUntilKilled, stdinLines } from './api.js';

const [url = '', token = '', envId = '', mode = 'short', nArg = '0', lanesArg = '1', sep, ...command] = process.argv.slice(2);
if (sep !== '--' || command.length === 0) throw new Error('usage: floor-loop.ts <url> <token> <env> <short|fill> <n> <lanes> -- <command...>');
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
const [file, args] = setpriv ? [setpriv, ['--pdeathsig', 'SIGKILL', '--', ...command]] : [command[0]!, command.slice(1)];

function start(item: { id: string }): ChildProcess {
  const env = { ...process.env, LEASE_KEEPER_WORK_ID: item.id, LEASE_KEEPER_WORK: JSON.stringify(item) };
  return spawn(file, args, { detached: true, stdio: 'inherit', env });
}

const exited = (child: ChildProcess): Promise<number | null> => new Promise((r) => child.once('exit', (code) => r(code)));

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
  say({ stopped: true, finished });
} else {
  const t0 = performance.now();
  const jobs: { id: string; child: ChildProcess; exit: Promise<number | null> }[] = [];
  const lane = async (): Promise<void> => {
    while (jobs.length < N) {
      const item = await claim();
      if (item === null) continue;
      const child = start(item);
      jobs.push({ id: item.id, child, exit: exited(child) });
    }
  };
  await Promise.all(Array.from({ length: LANES }, lane));
  say({ filled: jobs.length, ms: performance.now() - t0 });
  await nextLine(); // drain
  const t1 = performance.now();
  for (const j of jobs) if (j.child.pid !== undefined) process.kill(-j.child.pid, 'SIGTERM');
  await Promise.all(jobs.map(async (j) => api.report(j.id, { 'lease-keeper.outcome': 'stopped', 'lease-keeper.exit-code': String((await j.exit) ?? -1) })));
  say({ drained: jobs.length, ms: performance.now() - t1 });
}
await api.close();
stayUntilKilled();
