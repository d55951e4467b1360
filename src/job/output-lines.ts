/**
 * Cuts a job's output bytes into lines for the `prefix` output mode. Bytes are kept as they are (no
 * decoding: binary output and invalid UTF-8 pass through untouched); the only bytes removed are the `\n`
 * that end lines. Memory stays bounded whatever the job writes: a line longer than `maxLineBytes` comes
 * out in pieces of at most `maxLineBytes`, so at most that much of an unfinished line is ever held.
 */
export class LineSplitter {
  #pending: Buffer = EMPTY;

  constructor(readonly maxLineBytes: number) {
    if (!Number.isInteger(maxLineBytes) || maxLineBytes < 4) throw new RangeError('maxLineBytes must be an integer >= 4');
  }

  /** Bytes of an unfinished line held back, waiting for its end (at most maxLineBytes). */
  get pendingBytes(): number {
    return this.#pending.length;
  }

  /** Feeds one chunk; returns the lines (and pieces of overlong lines) it completed, without their `\n`. */
  push(chunk: Buffer): Buffer[] {
    const lines: Buffer[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(NEWLINE, start);
      let segment = chunk.subarray(start, nl === -1 ? chunk.length : nl);
      if (this.#pending.length > 0) {
        segment = Buffer.concat([this.#pending, segment]);
        this.#pending = EMPTY;
      }
      while (segment.length > this.maxLineBytes) {
        const cut = pieceEnd(segment, this.maxLineBytes);
        lines.push(segment.subarray(0, cut));
        segment = segment.subarray(cut);
      }
      if (nl === -1) {
        // A copy, so that the (usually 64 KiB) chunk it came from is not kept alive by a few bytes.
        this.#pending = segment.length === 0 ? EMPTY : Buffer.from(segment);
        return lines;
      }
      lines.push(segment);
      start = nl + 1;
    }
  }

  /** The stream ended: the unfinished last line, if any (then nothing is held). */
  end(): Buffer | null {
    const rest = this.#pending;
    this.#pending = EMPTY;
    return rest.length === 0 ? null : rest;
  }
}

const NEWLINE = 0x0a;
const EMPTY = Buffer.alloc(0);

/**
 * Where to end a piece of at most `max` bytes: at `max`, or up to 3 bytes earlier so that a UTF-8
 * character is not cut in two (the next piece must not start with a continuation byte 10xxxxxx).
 * Bytes that are not UTF-8 at all are cut at `max`.
 */
export function pieceEnd(bytes: Buffer, max: number): number {
  for (let end = max; end > max - 4 && end > 0; end--) {
    if (((bytes[end] ?? 0) & 0xc0) !== 0x80) return end;
  }
  return max;
}
