/**
 * A stand-in for journald's stdout stream socket (/run/systemd/journal/stdout): a unix stream server in a
 * temp dir that parses each connection's header (identifier, unit id, priority, level_prefix, forward to
 * syslog/kmsg/console: seven lines) and collects the lines that follow, byte for byte.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface JournalStream {
  identifier: string;
  unitId: string;
  priority: number;
  levelPrefix: boolean;
  forward: { syslog: boolean; kmsg: boolean; console: boolean };
  /** The raw header lines, as received. */
  header: string[];
  /** Complete lines after the header, without their `\n`. */
  lines: Buffer[];
  ended: boolean;
}

export class JournalServer {
  readonly streams: JournalStream[] = [];
  private readonly sockets = new Set<Socket>();

  private constructor(
    readonly dir: string,
    readonly path: string,
    private readonly server: Server,
  ) {}

  static async start(): Promise<JournalServer> {
    const dir = mkdtempSync(join(tmpdir(), 'lk-journal-'));
    const path = join(dir, 'stdout');
    const server = createServer();
    const js = new JournalServer(dir, path, server);
    server.on('connection', (socket) => js.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, resolve);
    });
    return js;
  }

  /** The streams whose identifier is `identifier`. */
  byIdentifier(identifier: string): JournalStream[] {
    return this.streams.filter((s) => s.identifier === identifier);
  }

  /** Waits until `pred` holds (polling), or fails after `timeoutMs` with what was received. */
  async waitFor(what: string, pred: () => boolean, timeoutMs = 10_000): Promise<void> {
    const until = performance.now() + timeoutMs;
    while (!pred()) {
      if (performance.now() > until) {
        const seen = this.streams.map((s) => `${s.identifier}/${s.priority}: ${s.lines.map(String).join(' | ')}`).join('\n');
        throw new Error(`journal server: timed out waiting for ${what}; streams:\n${seen}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.dir, { recursive: true, force: true });
  }

  private accept(socket: Socket): void {
    this.sockets.add(socket);
    const header: string[] = [];
    let stream: JournalStream | null = null;
    let buffered = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      for (let nl = buffered.indexOf(10); nl !== -1; nl = buffered.indexOf(10)) {
        const line = buffered.subarray(0, nl);
        buffered = buffered.subarray(nl + 1);
        if (stream === null) {
          header.push(line.toString());
          if (header.length === 7) {
            stream = {
              identifier: header[0]!,
              unitId: header[1]!,
              priority: Number(header[2]),
              levelPrefix: header[3] === '1',
              forward: { syslog: header[4] === '1', kmsg: header[5] === '1', console: header[6] === '1' },
              header: [...header],
              lines: [],
              ended: false,
            };
            this.streams.push(stream);
          }
        } else {
          stream.lines.push(Buffer.from(line));
        }
      }
    });
    socket.on('end', () => {
      if (stream !== null) stream.ended = true;
    });
    socket.on('error', () => {});
    socket.on('close', () => this.sockets.delete(socket));
  }
}
