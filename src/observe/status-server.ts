import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { HealthVerdict } from './health.js';
import type { KeeperSnapshot } from './snapshot.js';

/**
 * The LEASE_KEEPER_STATUS_ADDR listener: `GET /healthz` and `GET /metrics`, nothing else. Bind it to loopback
 * (the example env file does): it needs no authentication because it exposes nothing secret, but work ids and
 * the event-loop lag are nobody else's business.
 */
export interface StatusServerOptions {
  host: string;
  /** 0 picks a free port (see the returned url). */
  port: number;
  metrics: { render(): Promise<string>; contentType?: string };
  /** Readiness (assessHealth(...).readiness): 200 when healthy, else 503 with the reasons. */
  health: () => HealthVerdict;
  snapshot: () => KeeperSnapshot;
}

export interface StatusServer {
  /** e.g. `http://127.0.0.1:9464` */
  url: string;
  /** Stops listening and drops open connections. Idempotent. */
  close(): Promise<void>;
}

const PROMETHEUS_TEXT = 'text/plain; version=0.0.4; charset=utf-8';

export function startStatusServer(opts: StatusServerOptions): Promise<StatusServer> {
  const server = createServer({ requestTimeout: 10_000, headersTimeout: 10_000 }, (req, res) => {
    handle(opts, req, res).catch((err: unknown) => {
      // handle() catches everything it expects; this is a last resort.
      send(res, 500, 'text/plain; charset=utf-8', `internal error: ${err instanceof Error ? err.message : String(err)}\n`);
    });
  });
  server.keepAliveTimeout = 5_000;
  // Malformed requests: answer 400 if the socket is still writable, never crash.
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });

  return new Promise<StatusServer>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(opts.port, opts.host, () => {
      server.off('error', onError);
      // Later server errors (after listen) must not become uncaught exceptions.
      server.on('error', () => {});
      const addr = server.address() as AddressInfo;
      const host = addr.family === 'IPv6' || addr.address.includes(':') ? `[${addr.address}]` : addr.address;
      let closing: Promise<void> | null = null;
      resolve({
        url: `http://${host}:${addr.port}`,
        close: () => {
          closing ??= new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          });
          return closing;
        },
      });
    });
  });
}

async function handle(opts: StatusServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  let path: string;
  try {
    path = new URL(req.url ?? '/', 'http://status.invalid').pathname;
  } catch {
    send(res, 400, 'text/plain; charset=utf-8', 'bad request\n');
    return;
  }
  const known = path === '/healthz' || path === '/metrics';
  if (!known) {
    send(res, 404, 'text/plain; charset=utf-8', 'not found: try /healthz or /metrics\n');
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
    return;
  }

  if (path === '/healthz') {
    let status: number;
    let body: unknown;
    try {
      const verdict = opts.health();
      if (verdict.healthy) {
        status = 200;
        body = { status: 'ok', leases: opts.snapshot().leases.length };
      } else {
        status = 503;
        body = { status: 'unhealthy', reasons: verdict.reasons };
      }
    } catch (err) {
      status = 503;
      body = { status: 'unhealthy', reasons: [`health check failed: ${err instanceof Error ? err.message : String(err)}`] };
    }
    send(res, status, 'application/json; charset=utf-8', `${JSON.stringify(body)}\n`, req.method === 'HEAD');
    return;
  }

  try {
    const text = await opts.metrics.render();
    send(res, 200, opts.metrics.contentType ?? PROMETHEUS_TEXT, text, req.method === 'HEAD');
  } catch (err) {
    send(res, 500, 'text/plain; charset=utf-8', `metrics failed: ${err instanceof Error ? err.message : String(err)}\n`);
  }
}

function send(res: ServerResponse, status: number, type: string, body: string, headOnly = false): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(headOnly ? undefined : body);
}
