import type { IncomingMessage, ServerResponse } from 'node:http';
import { EmulatorError, badRequest } from './types.js';

/** A reply decided but not yet written (so a fault can still drop it). */
export interface Reply {
  status: number;
  body: string;
  headers?: Record<string, string>;
}

export const json = (status: number, value: unknown, headers?: Record<string, string>): Reply => ({
  status,
  body: JSON.stringify(value),
  ...(headers ? { headers } : {}),
});

/** The API's error envelope. */
export const errorReply = (status: number, type: string, message: string, requestId: string, headers?: Record<string, string>): Reply =>
  json(status, { type: 'error', request_id: requestId, error: { type, message } }, headers);

export const fromError = (err: EmulatorError, requestId: string): Reply => errorReply(err.status, err.errorType, err.message, requestId);

/** Bodies larger than this are refused with 400 (the real gateway allows 32 MB; nobody needs that here). */
export const MAX_BODY_BYTES = 1024 * 1024;

/** Reads the whole body; resolves null when the client went away or the body is too large. */
export function readBody(req: IncomingMessage): Promise<Buffer | 'too_large' | null> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (v: Buffer | 'too_large' | null) => {
      if (!done) {
        done = true;
        resolve(v);
      }
    };
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        finish('too_large');
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => finish(Buffer.concat(chunks)));
    req.on('error', () => finish(null));
    req.on('close', () => finish(req.complete ? Buffer.concat(chunks) : null));
  });
}

/**
 * Parses a JSON body. Empty = undefined. `requireObject`: anything but an object is 400. A non-empty body
 * sent with a Content-Type other than application/json is 400 too.
 */
export function parseJson(req: IncomingMessage, raw: Buffer, requireObject = true): Record<string, unknown> | undefined {
  if (raw.length === 0) return undefined;
  const ct = String(req.headers['content-type'] ?? '').toLowerCase();
  if (ct && !ct.startsWith('application/json')) throw badRequest('Content-Type must be application/json');
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch {
    throw badRequest('request body is not valid JSON');
  }
  if (requireObject && (typeof value !== 'object' || value === null || Array.isArray(value))) {
    throw badRequest('request body must be a JSON object');
  }
  return value as Record<string, unknown>;
}

/** Writes a reply unless the client is gone. */
export function send(res: ServerResponse, reply: Reply): void {
  if (res.destroyed || res.writableEnded) return;
  res.writeHead(reply.status, {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(reply.body)),
    ...reply.headers,
  });
  res.end(reply.body);
}

/** Destroys the connection without a reply: an RST where the platform supports it. */
export function resetSocket(req: IncomingMessage): void {
  const s = req.socket;
  if (typeof s.resetAndDestroy === 'function' && !s.destroyed) s.resetAndDestroy();
  else s.destroy();
}

/** Resolves after ms, or early (false) when the signal aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      resolve(false);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** A strict non-negative integer query value ("12"), or an error naming the parameter. */
export function intParam(name: string, raw: string | null, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (raw === null) return undefined;
  const n = /^\d{1,15}$/.test(raw) ? Number(raw) : NaN;
  if (!(n >= min && n <= max)) {
    throw badRequest(`${name} must be an integer ${max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in ${min}..${max}`}`);
  }
  return n;
}

export const isEmulatorError = (e: unknown): e is EmulatorError => e instanceof EmulatorError;
