// The emulator in its own process (its CPU is never the keeper's), and a client of its admin API.
import { spawn } from 'node:child_process';
import { paths } from './build.js';
import { track } from './proc.js';
import { idleSleep } from './time.js';

/** One event of the emulator's log (docs/emulator.md lists the fields of each type). */
export interface EmuEvent {
  seq: number;
  t_ms: number;
  type: string;
  work_id?: string;
  worker_id?: string | null;
  status?: number;
  state?: string;
  new_lease?: boolean;
  expected?: string;
  waited_ms?: number;
  lease_expires_at_ms?: number;
  [detail: string]: unknown;
}

export interface AdminItem {
  id: string;
  state: string;
  [k: string]: unknown;
}

export interface Admin {
  queue(count: number): Promise<AdminItem[]>;
  items(): Promise<AdminItem[]>;
  stop(id: string, force?: boolean): Promise<unknown>;
  takeover(id: string): Promise<unknown>;
  fault(spec: Record<string, unknown>): Promise<unknown>;
  clearFaults(): Promise<unknown>;
  settings(patch: Record<string, unknown>): Promise<unknown>;
  reset(): Promise<unknown>;
  stats(): Promise<Record<string, unknown>>;
  lastSeq(): Promise<number>;
  events(since?: number): Promise<EmuEvent[]>;
}

export interface Emulator {
  pid: number;
  url: string;
  token: string;
  environmentId: string;
  admin: Admin;
  stop(): Promise<void>;
}

/**
 * `node bin/lease-keeper emulator --port 0 [--ttl-override N]` in its own process; its event log on stderr
 * goes to /dev/null (the admin API has it all). `ttlOverride: null` grants what the keeper asks for
 * (60 s by default).
 */
export async function startEmulatorProcess({ ttlOverride = 10 as number | null } = {}): Promise<Emulator> {
  const child = spawn(process.execPath, [paths.bin, 'emulator', '--port', '0', ...(ttlOverride === null ? [] : ['--ttl-override', String(ttlOverride)])], {
    stdio: ['ignore', 'pipe', 'ignore'],
    env: { PATH: process.env.PATH, HOME: process.env.HOME },
  });
  const pid = track(child.pid);
  const exited = new Promise((r) => child.once('exit', r));
  const line = await new Promise<string>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('emulator did not print its listening line within 10 s')), 10_000);
    child.stdout.on('data', (c: Buffer) => {
      buf += c.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(buf.slice(0, nl));
      }
    });
    child.once('exit', (code) => reject(new Error(`emulator exited with ${code} before listening`)));
  }).catch((err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });
  const info = JSON.parse(line) as { url: string; token?: string; environment_id: string };
  const running = (): boolean => child.exitCode === null && child.signalCode === null;
  return {
    pid,
    url: info.url,
    token: info.token ?? 'pt-emulator',
    environmentId: info.environment_id,
    admin: adminClient(info.url),
    async stop() {
      if (running()) child.kill('SIGTERM');
      await Promise.race([exited, idleSleep(3000)]);
      if (running()) child.kill('SIGKILL');
    },
  };
}

/** The emulator's admin API over HTTP (docs/emulator.md). */
export function adminClient(url: string): Admin {
  const base = `${url}/_admin`;
  const call = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const res = await fetch(base + path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`admin ${method} ${path}: ${res.status} ${text}`);
    return JSON.parse(text) as T;
  };
  return {
    queue: async (count) => {
      const items: AdminItem[] = [];
      for (let left = count; left > 0; left -= 1000) items.push(...(await call<{ items: AdminItem[] }>('POST', '/items', { count: Math.min(1000, left) })).items);
      return items;
    },
    items: async () => (await call<{ items: AdminItem[] }>('GET', '/items')).items,
    stop: (id, force = false) => call('POST', `/items/${id}/stop`, { force }),
    takeover: (id) => call('POST', `/items/${id}/takeover`, {}),
    fault: (spec) => call('POST', '/faults', spec),
    clearFaults: () => call('DELETE', '/faults'),
    settings: (patch) => call('POST', '/settings', patch),
    reset: () => call('POST', '/reset'),
    stats: () => call('GET', '/stats'),
    lastSeq: async () => (await call<{ last_seq: number }>('GET', '/events?since=999999999999')).last_seq,
    events: async (since = 0) => (await call<{ events: EmuEvent[] }>('GET', `/events?since=${since}`)).events,
  };
}

/**
 * Reads the emulator's event log as it grows and hands each event to `onEvent` once: for long runs with
 * many leases, whose events would outgrow the emulator's log (it keeps the last 200,000) or one reply.
 */
export class EventFeed {
  private since = 0;
  private timer: NodeJS.Timeout | null = null;
  private pulling: Promise<void> | null = null;

  constructor(
    private readonly admin: Admin,
    private readonly onEvent: (e: EmuEvent) => void,
  ) {}

  async start(everyMs = 2000): Promise<void> {
    this.since = await this.admin.lastSeq();
    this.resume(everyMs);
  }

  /** Reads every event logged so far (waits for a pull in progress). */
  async pull(): Promise<void> {
    while (this.pulling) await this.pulling;
    this.pulling = (async () => {
      const events = await this.admin.events(this.since);
      for (const e of events) this.onEvent(e);
      if (events.length > 0) this.since = events[events.length - 1]!.seq;
    })();
    try {
      await this.pulling;
    } finally {
      this.pulling = null;
    }
  }

  /**
   * Stops reading until resume(), once a pull in progress has ended: a measured window leaves the emulator
   * alone (each read costs it ~1 ms of CPU per 320 events, work the other kind of window does not make it do).
   */
  async pause(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    while (this.pulling) await this.pulling;
  }

  resume(everyMs = 2000): void {
    this.timer ??= setInterval(() => void this.pull(), everyMs);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.pull();
  }
}

const running = new Set<Emulator>();

/** Runs fn against a fresh emulator process, stopped afterwards (and by stopAllEmulators on a failure). */
export async function withEmulator<T>(ttlOverride: number | null, fn: (emu: Emulator) => Promise<T>): Promise<T> {
  const e = await startEmulatorProcess({ ttlOverride });
  running.add(e);
  try {
    return await fn(e);
  } finally {
    await e.stop();
    running.delete(e);
  }
}

export async function stopAllEmulators(): Promise<void> {
  await Promise.all([...running].map((e) => e.stop()));
}
