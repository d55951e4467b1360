/**
 * `lease-keeper demo`: the emulator in-process, a sample job, and three short scenes that show the
 * lifecycle: a normal completion, a graceful stop from the server, and a lease taken over (412).
 * Exits 0 only if every scene ended with the outcome it is meant to show.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkApi } from '../api/client.js';
import { startEmulator, type Emulator } from '../emulator/index.js';
import { monotonicClock } from '../lease/clock.js';
import type { Outcome } from '../lease/outcome.js';
import { createLogger, type Logger } from '../observe/logger.js';
import { noEvents } from '../observe/snapshot.js';
import { Worker } from '../worker/loop.js';
import type { CliIO } from './io.js';

/** The sample job: works in steps, and on SIGTERM saves its work and exits 0 (a clean drain). */
const SAMPLE_JOB = `#!/usr/bin/env bash
steps=\${DEMO_STEPS:-3}
trap 'echo "  [job] SIGTERM received: saving work and exiting"; exit 0' TERM
echo "  [job] started for $LEASE_KEEPER_WORK_ID (session $LEASE_KEEPER_SESSION_ID)"
for i in $(seq 1 "$steps"); do
  echo "  [job] step $i/$steps"
  sleep 1 & wait $!
done
echo "  [job] done"
`;

interface Scene {
  title: string;
  explain: string;
  steps: number;
  expect: Outcome;
  /** What the "server side" does while the job runs. */
  act?: (emu: Emulator, workId: string, say: (s: string) => void) => Promise<void>;
}

const SCENES: Scene[] = [
  {
    title: 'A job that completes',
    explain:
      'The keeper polls, acks, takes the lease with a first heartbeat (expected=NO_HEARTBEAT) BEFORE starting the job, ' +
      'then heartbeats, sending each reply\'s last_heartbeat back as the next precondition. The job exits 0: ' +
      'the keeper writes exit_code/outcome into the item\'s metadata and stops the item.',
    steps: 3,
    expect: 'completed',
  },
  {
    title: 'A graceful stop from the server',
    explain:
      'While the job runs, an operator stops the item (POST .../stop). The next heartbeat answers state "stopping": ' +
      'the keeper sends SIGTERM to the job\'s process group, keeps heartbeating while it drains, then confirms the stop.',
    steps: 30,
    expect: 'drained',
    act: async (emu, workId, say) => {
      await waitForHeartbeats(emu, workId, 2);
      say('server: an operator requests a graceful stop of the item');
      emu.requestStop(workId);
    },
  },
  {
    title: 'A lease taken over by another worker',
    explain:
      'Another holder takes the lease. The keeper\'s next heartbeat, still carrying its own precondition, gets 412: ' +
      'the lease is lost, so the job is stopped at once, and no more heartbeats and no stop are sent for the item.',
    steps: 30,
    expect: 'lease_lost',
    act: async (emu, workId, say) => {
      await waitForHeartbeats(emu, workId, 2);
      say('server: another worker takes over the lease');
      emu.takeover(workId);
    },
  },
];

export async function demoCommand(flags: Record<string, unknown>, io: CliIO): Promise<number> {
  const format = flags.format === 'json' || flags.format === 'pretty' ? flags.format : isTTY(io) ? 'pretty' : 'json';
  if (flags.format !== undefined && flags.format !== 'json' && flags.format !== 'pretty') {
    io.stderr.write(`lease-keeper demo: --format must be pretty or json, got "${String(flags.format)}"\n`);
    return 78;
  }
  const token = `pt-demo-${randomBytes(9).toString('hex')}`;
  const say = (line: string): void => {
    if (format === 'pretty') io.stdout.write(`${line}\n`);
    else io.stdout.write(`${JSON.stringify({ level: 30, time: new Date().toISOString(), msg: 'demo', narration: line })}\n`);
  };
  const dir = mkdtempSync(join(tmpdir(), 'lease-keeper-demo-'));
  const job = join(dir, 'sample-job.sh');
  writeFileSync(job, SAMPLE_JOB);
  chmodSync(job, 0o755);

  // A 3 s lease (the real API grants at least 10 s) so that heartbeats show up within seconds.
  const emu = await startEmulator({ token, environmentId: 'env_demo', ttlOverrideSeconds: 3 });
  const log = createLogger({
    level: 'debug', // routine heartbeats are debug lines, and the demo is about them
    format,
    secrets: [token],
    journal: false,
    ...(io.stdout === process.stdout ? {} : { destination: io.stdout }),
    base: { worker_id: 'demo-worker' },
  });
  const results: { scene: Scene; outcome: Outcome | null }[] = [];
  try {
    say(`lease-keeper demo: emulator on ${emu.url}, environment env_demo, granted ttl 3 s, job ${job}`);
    for (const [i, scene] of SCENES.entries()) {
      say('');
      say(`== Scene ${i + 1}/${SCENES.length}: ${scene.title} ==`);
      say(wrap(scene.explain));
      const outcome = await playScene(scene, emu, token, job, io, log, say);
      results.push({ scene, outcome });
      say(`-> outcome: ${outcome ?? 'none'} (expected ${scene.expect})`);
    }
  } finally {
    await emu.close();
    rmSync(dir, { recursive: true, force: true });
  }
  say('');
  const failed = results.filter((r) => r.outcome !== r.scene.expect);
  for (const r of results) say(`${r.outcome === r.scene.expect ? 'ok  ' : 'FAIL'} ${r.scene.title}: ${r.outcome}`);
  if (failed.length > 0) {
    io.stderr.write(`lease-keeper demo: ${failed.length} scene(s) did not end as expected\n`);
    return 1;
  }
  say('The job never ran without a lease, and was stopped whenever the lease ended. Try it with your own job: see README.');
  return 0;
}

async function playScene(
  scene: Scene,
  emu: Emulator,
  token: string,
  job: string,
  io: CliIO,
  log: Logger,
  say: (s: string) => void,
): Promise<Outcome | null> {
  const [item] = emu.queue({ count: 1 });
  say(`server: queued ${item!.id}`);
  const api = new WorkApi({ apiUrl: emu.url, token, environmentId: 'env_demo' });
  const worker = new Worker({
    api,
    settings: {
      desiredTtlSeconds: 10,
      heartbeatFraction: 0.33,
      stopSignal: 'SIGTERM',
      graceMs: 5000,
      fenceMarginMs: null,
      onShutdown: 'stop',
      workerId: 'demo-worker',
    },
    workerId: 'demo-worker',
    command: [job],
    tokens: [token],
    concurrency: 1,
    once: true,
    baseEnv: { ...io.env, DEMO_STEPS: String(scene.steps) },
    log,
    clock: monotonicClock,
    events: noEvents,
  });
  const acting = scene.act?.(emu, item!.id, say);
  const result = await worker.run();
  await acting;
  await api.close();
  const final = emu.item(item!.id);
  const holder = final.lease?.holder_worker_id;
  const held = holder && holder !== 'demo-worker' ? ` (lease held by ${holder})` : '';
  say(`server: ${item!.id} is now "${final.state}"${held}${Object.keys(final.metadata).length ? `, metadata ${JSON.stringify(final.metadata)}` : ''}`);
  return result.lastItem?.outcome ?? null;
}

function waitForHeartbeats(emu: Emulator, workId: string, n: number): Promise<unknown> {
  let seen = 0;
  return emu.waitForEvent((e) => e.type === 'heartbeat_accepted' && e.work_id === workId && ++seen >= n, { timeoutMs: 20_000 });
}

function isTTY(io: CliIO): boolean {
  return Boolean((io.stdout as { isTTY?: boolean }).isTTY);
}

function wrap(text: string, width = 100): string {
  const out: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line.length + word.length + 1 > width) {
      out.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) out.push(line);
  return out.map((l) => `   ${l}`).join('\n');
}
