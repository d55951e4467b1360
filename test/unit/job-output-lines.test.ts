import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { LineSplitter, pieceEnd } from '../../src/job/output-lines.js';

const b = (s: string) => Buffer.from(s);
const texts = (lines: Buffer[]) => lines.map((l) => l.toString());

describe('LineSplitter', () => {
  it('returns complete lines without their newline and holds the unfinished one', () => {
    const s = new LineSplitter(100);
    expect(texts(s.push(b('one\ntwo\nthr')))).toEqual(['one', 'two']);
    expect(s.pendingBytes).toBe(3);
    expect(texts(s.push(b('ee\n')))).toEqual(['three']);
    expect(s.pendingBytes).toBe(0);
    expect(s.end()).toBeNull();
  });

  it('keeps empty lines and \\r as they are', () => {
    const s = new LineSplitter(100);
    expect(texts(s.push(b('\n\na\r\n')))).toEqual(['', '', 'a\r']);
  });

  it('gives the unfinished last line at the end, once', () => {
    const s = new LineSplitter(100);
    expect(s.push(b('no newline'))).toEqual([]);
    expect(s.end()?.toString()).toBe('no newline');
    expect(s.end()).toBeNull();
  });

  it('cuts an overlong line into pieces of at most maxLineBytes and never holds more than that', () => {
    const s = new LineSplitter(10);
    const out: Buffer[] = [];
    // 35 bytes arriving 4 at a time, then the newline.
    const line = 'abcdefghijklmnopqrstuvwxyz012345678';
    for (let i = 0; i < line.length; i += 4) {
      out.push(...s.push(b(line.slice(i, i + 4))));
      expect(s.pendingBytes).toBeLessThanOrEqual(10);
    }
    out.push(...s.push(b('\n')));
    expect(texts(out)).toEqual(['abcdefghij', 'klmnopqrst', 'uvwxyz0123', '45678']);
  });

  it('a 1 MB line in 64 KiB chunks: 16 KiB pieces, nothing lost, bounded memory', () => {
    const s = new LineSplitter(16 * 1024);
    const line = Buffer.alloc(1024 * 1024, 0x61);
    const out: Buffer[] = [];
    for (let i = 0; i < line.length; i += 65536) {
      out.push(...s.push(line.subarray(i, i + 65536)));
      expect(s.pendingBytes).toBeLessThanOrEqual(16 * 1024);
    }
    out.push(...s.push(b('\n')));
    expect(out.every((p) => p.length <= 16 * 1024)).toBe(true);
    expect(Buffer.concat(out).equals(line)).toBe(true);
    expect(out).toHaveLength(64);
  });

  it('does not cut a UTF-8 character in two when it can avoid it', () => {
    const s = new LineSplitter(8);
    // 7 ASCII bytes, then "é" (2 bytes): the first piece ends before it.
    const out = s.push(b('abcdefgé\n'));
    expect(texts(out)).toEqual(['abcdefg', 'é']);
  });

  it('passes binary bytes through untouched: NUL, invalid UTF-8, lone continuation bytes', () => {
    const s = new LineSplitter(4);
    const bytes = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x80, 0x80, 0x80, 0x80, 0xc3, 0x0a, 0x00]);
    const out = s.push(bytes);
    // Cut before 0xfe (it is not a continuation byte), then at 4 bytes (more than 3 continuation bytes in a row).
    expect(out.map((l) => [...l])).toEqual([[0x00, 0xff], [0xfe, 0x80, 0x80, 0x80], [0x80, 0x80, 0xc3]]);
    expect([...s.end()!]).toEqual([0x00]);
  });

  it('property: joining the lines with newlines gives back the input, every piece within the bound', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 50 }), { maxLength: 20 }), fc.integer({ min: 4, max: 16 }), (chunks, max) => {
        const s = new LineSplitter(max);
        const input = Buffer.concat(chunks.map((c) => Buffer.from(c)));
        // Record which pieces ended with a newline: pieces of an overlong line are joined without one.
        const rebuilt: Buffer[] = [];
        for (const c of chunks) {
          for (const line of s.push(Buffer.from(c))) {
            expect(line.length).toBeLessThanOrEqual(max);
            rebuilt.push(line);
          }
          expect(s.pendingBytes).toBeLessThanOrEqual(max);
        }
        const rest = s.end();
        // Removing every newline from the input gives the concatenation of all pieces.
        const withoutNewlines = Buffer.from([...input].filter((x) => x !== 0x0a));
        expect(Buffer.concat([...rebuilt, rest ?? Buffer.alloc(0)]).equals(withoutNewlines)).toBe(true);
        // As many complete lines end in a newline as the input has newlines, at least.
        const newlines = [...input].filter((x) => x === 0x0a).length;
        expect(rebuilt.length).toBeGreaterThanOrEqual(newlines);
      }),
    );
  });
});

describe('pieceEnd', () => {
  it('cuts at max when the next byte starts a character', () => {
    expect(pieceEnd(b('abcdef'), 4)).toBe(4);
  });
  it('backs off over continuation bytes (a 4-byte character)', () => {
    const bytes = Buffer.concat([b('ab'), b('😀'), b('c')]); // 2 + 4 + 1
    expect(pieceEnd(bytes, 4)).toBe(2);
  });
  it('cuts at max when more than 3 continuation bytes follow (not UTF-8)', () => {
    const bytes = Buffer.from([0x61, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80]);
    expect(pieceEnd(bytes, 5)).toBe(5);
  });
});
