import { randomBytes } from 'node:crypto';

/** 0-9A-Za-z in ASCII order, so fixed-width base62 strings sort like the numbers they encode. */
const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

export const WORK_ID_RE = /^work_[A-Za-z0-9]{24}$/;
export { ENV_ID_RE } from '../api/parse.js';

function base62(n: number, width: number): string {
  let s = '';
  let v = Math.floor(n);
  for (let i = 0; i < width; i++) {
    s = ALPHABET[v % 62]! + s;
    v = Math.floor(v / 62);
  }
  return s;
}

function randomBase62(len: number): string {
  const bytes = randomBytes(len * 2);
  let s = '';
  for (let i = 0; s.length < len && i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b < 248) s += ALPHABET[b % 62]; // 248 = 4 * 62: no modulo bias
  }
  while (s.length < len) s += ALPHABET[randomBytes(1)[0]! % 62];
  return s;
}

/**
 * Work ids sort in creation order (the list endpoint's order): 8 base62 digits of the creation time in ms,
 * 4 of a per-process sequence, 12 random. Always `work_` + 24 characters of [A-Za-z0-9].
 */
export function workIdFactory(): (nowMs: number) => string {
  let lastMs = 0;
  let seq = 0;
  return (nowMs: number) => {
    const ms = Math.max(nowMs, lastMs);
    seq = ms === lastMs ? seq + 1 : 0;
    lastMs = ms;
    if (seq >= 62 ** 4) {
      lastMs = ms + 1;
      seq = 0;
    }
    return `work_${base62(lastMs, 8)}${base62(seq, 4)}${randomBase62(12)}`;
  };
}

export const newSessionId = (): string => `sess_${randomBase62(24)}`;
