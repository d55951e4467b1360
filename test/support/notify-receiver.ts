/**
 * A real sd_notify receiver for tests: an AF_UNIX SOCK_DGRAM socket (what systemd's NOTIFY_SOCKET is),
 * served by python3. Each datagram is recorded with its arrival time (ms since the epoch); BARRIER=1
 * file descriptors are closed so that systemd-notify's barrier completes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const RECEIVER = String.raw`
import array, json, os, socket, sys, time
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
print(json.dumps({"ready": True}), flush=True)
fdsize = array.array("i").itemsize
while True:
    data, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(16 * fdsize))
    for level, typ, payload in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds = array.array("i"); fds.frombytes(payload[: len(payload) - (len(payload) % fdsize)])
            for fd in fds: os.close(fd)
    print(json.dumps({"msg": data.decode(), "at": time.time() * 1000}), flush=True)
`;

export interface NotifyMessage {
  /** One assignment per line, as sent (e.g. `READY=1\nSTATUS=…`); BARRIER=1 is left out. */
  msg: string;
  at: number;
}

export interface NotifyReceiver {
  socketPath: string;
  messages: NotifyMessage[];
  /** Every assignment received, in order (a datagram may carry several). */
  assignments(): string[];
  waitFor(pred: (assignments: string[]) => boolean, ms?: number): Promise<void>;
  close(): void;
}

export async function startNotifyReceiver(dir: string): Promise<NotifyReceiver> {
  const socketPath = join(dir, 'notify.sock');
  const child: ChildProcess = spawn('python3', ['-c', RECEIVER, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  const messages: NotifyMessage[] = [];
  let listeners: (() => void)[] = [];
  let readyResolve: () => void = () => {};
  const ready = new Promise<void>((r) => (readyResolve = r));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const obj = JSON.parse(line) as { ready?: boolean; msg?: string; at?: number };
    if (obj.ready) readyResolve();
    if (obj.msg !== undefined && obj.msg !== 'BARRIER=1') messages.push({ msg: obj.msg, at: obj.at! });
    for (const l of listeners) l();
  });
  await ready;
  const assignments = (): string[] => messages.flatMap((m) => m.msg.split('\n').filter(Boolean));
  return {
    socketPath,
    messages,
    assignments,
    waitFor: (pred, ms = 10_000) =>
      new Promise<void>((resolve, reject) => {
        if (pred(assignments())) return resolve();
        const timer = setTimeout(() => reject(new Error(`timed out; got ${JSON.stringify(assignments())}`)), ms);
        const check = (): void => {
          if (pred(assignments())) {
            clearTimeout(timer);
            listeners = listeners.filter((l) => l !== check);
            resolve();
          }
        };
        listeners.push(check);
      }),
    close: () => child.kill('SIGKILL'),
  };
}
