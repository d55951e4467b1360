/**
 * The project's units installed in a booted sandbox as an operator would (docs/systemd.md): the `lease-keeper`
 * user (useradd, in the guest's overlay only), the template `systemd/lease-keeper@.service` unchanged, the
 * instance's env file and `/etc/lease-keeper/<instance>.pat`, and one drop-in with only what a test must
 * change: the command (this checkout's keeper and test/system/job.sh), short start/stop/restart times. The
 * emulator runs inside the guest as a transient unit on loopback, with a short granted ttl.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Sandbox } from './sandbox.js';

export const ROOT = resolve(import.meta.dirname, '../..');
export const INSTANCE = 'sys';
export const UNIT = `lease-keeper@${INSTANCE}.service`;
export const STATE_DIR = `/var/lib/lease-keeper/${INSTANCE}`;
const EMULATOR_PORT = 8787;
const ENVIRONMENT_ID = 'env_system';
/** Granted by the emulator: heartbeats every ~2 s (fraction 0.33), so a test sees several in a few seconds. */
export const TTL_SECONDS = 6;

/**
 * Extra unit settings for every test, from LEASE_KEEPER_SYSTEM_BREAK ("KillMode=process", several separated by
 * `;`): a throwaway drop-in that proves a test catches the breakage (docs/systemd.md lists which one does).
 */
function breakage(): string {
  const raw = process.env.LEASE_KEEPER_SYSTEM_BREAK ?? '';
  return raw.split(';').map((s) => s.trim()).filter(Boolean).join('\n');
}

export interface GuestOptions {
  /** More lines for the env file (KEY=value). */
  env?: Record<string, string>;
  /** More [Service] lines for the unit, in a second drop-in. */
  unit?: string[];
  /** Write a token the emulator rejects. */
  wrongToken?: boolean;
}

export interface ItemView {
  id: string;
  state: string;
  lease: { holder_worker_id: string; heartbeats: number } | null;
}

export interface EmulatorEvent {
  seq: number;
  t_ms: number;
  type: string;
  work_id?: string;
  [k: string]: unknown;
}

export interface JobRecord {
  /** Every start of the job for this item (a restarted keeper claims it again). */
  starts: { pid: number; ms: number }[];
  start: { pid: number; ms: number } | null;
  signals: { name: string; ms: number }[];
  end: { how: string; ms: number } | null;
}

export class KeeperGuest {
  /** The emulator's token; the keeper gets it only through the credential. */
  readonly token = `pt-system-SECRET-${randomBytes(8).toString('hex')}`;

  private constructor(readonly sb: Sandbox) {}

  static async boot(opts: GuestOptions = {}): Promise<KeeperGuest> {
    const node = process.execPath;
    // The node binary's prefix is bound too when it lives where the guest has its own fresh dirs.
    const binds = [ROOT];
    if (!node.startsWith('/usr/') && !node.startsWith('/bin/')) binds.push(dirname(dirname(node)));
    const sb = await Sandbox.boot({ binds, hardTimeoutS: Number(process.env.LEASE_KEEPER_SYSTEM_TIMEOUT ?? 180) });
    const g = new KeeperGuest(sb);
    try {
      await g.install(opts);
    } catch (err) {
      await sb.stop();
      throw err;
    }
    return g;
  }

  private async install(opts: GuestOptions): Promise<void> {
    const node = process.execPath;
    const bin = join(ROOT, 'bin/lease-keeper');
    await this.sb.sh(
      'useradd --system --user-group --home-dir /var/lib/lease-keeper --no-create-home --shell /usr/sbin/nologin lease-keeper',
    );
    await this.sb.write(`/etc/systemd/system/lease-keeper@.service`, readFileSync(join(ROOT, 'systemd/lease-keeper@.service'), 'utf8'));
    const env = {
      QODER_API_URL: `http://127.0.0.1:${EMULATOR_PORT}`,
      QODER_ENVIRONMENT_ID: ENVIRONMENT_ID,
      LEASE_KEEPER_LOG_LEVEL: 'debug',
      ...opts.env,
    };
    await this.sb.sh('install -d -m 0755 /etc/lease-keeper');
    await this.sb.write(`/etc/lease-keeper/${INSTANCE}.env`, Object.entries(env).map(([k, v]) => `${k}=${v}\n`).join(''), '0640');
    await this.sb.sh(`chgrp lease-keeper /etc/lease-keeper/${INSTANCE}.env`);
    const pat = opts.wrongToken ? `pt-system-WRONG-${randomBytes(4).toString('hex')}` : this.token;
    await this.sb.write(`/etc/lease-keeper/${INSTANCE}.pat`, `${pat}\n`, '0600');

    const dropIn = [
      '[Service]',
      'ExecStart=',
      `ExecStart=${node} ${bin} run -- ${join(ROOT, 'test/system/job.sh')}`,
      'TimeoutStartSec=20s',
      'TimeoutStopSec=20s',
      'RestartSec=1s',
    ];
    // The keeper must see the checkout and node where they are: ProtectHome=yes hides /root and /home, and
    // PrivateTmp=yes gives the unit its own /tmp (a fresh clone often sits in one).
    for (const path of [ROOT, dirname(dirname(node))]) {
      if (/^\/(root|home|run\/user)(\/|$)/.test(path)) dropIn.push('ProtectHome=read-only');
      if (/^\/(var\/)?tmp\//.test(path)) dropIn.push(`BindReadOnlyPaths=${path}`);
    }
    const d = `/etc/systemd/system/${UNIT}.d`;
    await this.sb.write(`${d}/10-system-test.conf`, `${dropIn.join('\n')}\n`);
    if (opts.unit?.length) await this.sb.write(`${d}/20-this-test.conf`, `[Service]\n${opts.unit.join('\n')}\n`);
    const broken = breakage();
    if (broken) await this.sb.write(`${d}/90-breakage.conf`, `[Service]\n${broken}\n`);
    await this.sb.sh('systemctl daemon-reload');

    // The token reaches the emulator through its environment: a command line would be in the journal.
    const emu = await this.sb.exec(['systemd-run', '--quiet', '--unit=lk-emulator', '-p', 'User=nobody', `--setenv=QODER_PAT=${this.token}`,
      node, bin, 'emulator', '--port', String(EMULATOR_PORT), '--environment-id', ENVIRONMENT_ID, '--ttl-override', String(TTL_SECONDS)]);
    if (emu.code !== 0) throw new Error(`cannot start the emulator in the sandbox: ${emu.stderr}`);
    await this.until('the emulator listens', async () => (await this.sb.exec(['curl', '-sf', `${this.adminUrl}/stats`])).code === 0, 15_000);
  }

  get adminUrl(): string {
    return `http://127.0.0.1:${EMULATOR_PORT}/_admin`;
  }

  /** Calls the emulator's admin API from inside the guest. */
  async admin<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const args = ['curl', '-sS', '-X', method, `${this.adminUrl}${path}`];
    if (body !== undefined) args.push('-H', 'content-type: application/json', '--data-binary', JSON.stringify(body));
    const r = await this.sb.exec(args);
    if (r.code !== 0) throw new Error(`admin ${method} ${path}: curl exit ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  async queue(count = 1): Promise<ItemView[]> {
    return (await this.admin<{ items: ItemView[] }>('POST', '/items', { count })).items;
  }

  item(id: string): Promise<ItemView> {
    return this.admin<ItemView>('GET', `/items/${id}`);
  }

  async events(): Promise<EmulatorEvent[]> {
    return (await this.admin<{ events: EmulatorEvent[] }>('GET', '/events?since=0')).events;
  }

  /** systemctl in the guest; resolves with its result whatever the exit code. */
  systemctl(...args: string[]): ReturnType<Sandbox['exec']> {
    return this.sb.exec(['systemctl', '--no-pager', ...args], { timeoutMs: 60_000 });
  }

  /** The unit's properties (systemctl show), e.g. ActiveState, Result, ExecMainStatus, NRestarts, MainPID. */
  async show(...props: string[]): Promise<Record<string, string>> {
    const r = await this.systemctl('show', UNIT, ...props.map((p) => `-p${p}`));
    const out: Record<string, string> = {};
    for (const line of r.stdout.split('\n')) {
      const eq = line.indexOf('=');
      if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
    }
    return out;
  }

  /** journalctl in the guest (no pager), its stdout. */
  async journal(...args: string[]): Promise<string> {
    return (await this.sb.exec(['journalctl', '--no-pager', '-q', ...args])).stdout;
  }

  /** The keeper's JSON log lines from the journal (the unit's, in order). */
  async keeperLines(): Promise<{ msg: string; level: number; [k: string]: unknown }[]> {
    const out = await this.journal('-u', UNIT, '-o', 'cat');
    const lines = [];
    for (const l of out.split('\n')) {
      if (!l.startsWith('{')) continue;
      try {
        lines.push(JSON.parse(l) as { msg: string; level: number });
      } catch {
        /* a job line */
      }
    }
    return lines;
  }

  /** A file from the guest, or null. */
  async cat(path: string): Promise<string | null> {
    const r = await this.sb.exec(['cat', path]);
    return r.code === 0 ? r.stdout : null;
  }

  async job(workId: string): Promise<JobRecord> {
    const text = (await this.cat(`${STATE_DIR}/${workId}.log`)) ?? '';
    const rec: JobRecord = { starts: [], start: null, signals: [], end: null };
    for (const line of text.split('\n')) {
      const f = line.split(' ');
      if (f[0] === 'start') {
        rec.start = { pid: Number(f[1]), ms: Number(f[2]) };
        rec.starts.push(rec.start);
      }
      if (f[0] === 'signal') rec.signals.push({ name: f[1]!, ms: Number(f[2]) });
      if (f[0] === 'end') rec.end = { how: f[1]!, ms: Number(f[2]) };
    }
    return rec;
  }

  /** True when the pid (in the guest's pid namespace) is a live process (zombies count as gone). */
  async running(pid: number): Promise<boolean> {
    const stat = await this.cat(`/proc/${pid}/stat`);
    return stat !== null && !/^\d+ \(.*\) Z/.test(stat);
  }

  async until(what: string, check: () => Promise<boolean>, timeoutMs = 20_000, everyMs = 100): Promise<void> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      if (await check()) return;
      if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
      await sleep(everyMs);
    }
  }

  /** Waits for a value that check() returns non-undefined. */
  async waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
    let value: T | undefined;
    await this.until(what, async () => (value = await check()) !== undefined, timeoutMs);
    return value!;
  }

  /** The job of `workId` has written its start record. */
  jobStarted(workId: string, timeoutMs = 20_000): Promise<JobRecord> {
    return this.waitFor(`the job of ${workId} started`, async () => {
      const r = await this.job(workId);
      return r.start ? r : undefined;
    }, timeoutMs);
  }

  stop(): Promise<void> {
    return this.sb.stop();
  }
}
