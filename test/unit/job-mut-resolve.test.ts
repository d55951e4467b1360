/**
 * A job that cannot be spawned is reported before anything runs, with a message saying what is wrong
 * and what to do (spec §3): the cases job-resolve.test.ts leaves open, word for word.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { resolveCommand } from '../../src/job/resolve.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lk-mut-resolve-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function file(path: string, mode: number, text = '#!/bin/sh\nexit 0\n'): string {
  writeFileSync(path, text, { mode });
  return path;
}

describe('resolveCommand: what cannot be run, and why', () => {
  it('an empty command and one with a NUL byte', () => {
    expect(resolveCommand('', {})).toEqual({ ok: false, code: 127, message: 'job command is empty' });
    expect(resolveCommand('sh\0-c', {})).toEqual({ ok: false, code: 127, message: 'job command contains a NUL byte' });
  });

  it('a path that does not exist', () => {
    const missing = join(dir, 'job.sh');
    expect(resolveCommand(missing, {})).toEqual({ ok: false, code: 127, message: `job command "${missing}" does not exist` });
  });

  it('never runs what sits in the working directory through an empty PATH entry', () => {
    file(join(dir, 'job'), 0o755);
    for (const PATH of [':/nowhere', '/nowhere:', '/nowhere::/nowhere2', '']) {
      expect(resolveCommand('job', { PATH }, dir), JSON.stringify(PATH)).toMatchObject({ ok: false, code: 127 });
    }
  });

  it('names the first match that cannot be run, not a later one', () => {
    const [a, b] = [join(dir, 'a'), join(dir, 'b')];
    mkdirSync(a);
    mkdirSync(b);
    mkdirSync(join(a, 'job'));
    file(join(b, 'job'), 0o644);
    expect(resolveCommand('job', { PATH: `${a}:${b}` })).toEqual({
      ok: false,
      code: 126,
      message: `job command "job" found at ${join(a, 'job')} but it is a directory, not an executable file`,
    });
  });

  it('a PATH entry that is a file is passed over', () => {
    expect(resolveCommand('lk-none', { PATH: '/etc/passwd:/nowhere' })).toMatchObject({ ok: false, code: 127 });
    expect(resolveCommand('sh', { PATH: '/etc/passwd:/usr/bin' })).toEqual({ ok: true, path: '/usr/bin/sh' });
  });
});

describe('resolveCommand: the #! line', () => {
  it('an interpreter that is a directory, or not executable: 126 naming it', () => {
    const interp = join(dir, 'interp');
    mkdirSync(interp);
    const script = file(join(dir, 'a.sh'), 0o755, `#!${interp}\n`);
    expect(resolveCommand(script, {})).toEqual({
      ok: false,
      code: 126,
      message: `job command "${script}" starts with "#!${interp}", and ${interp} is a directory, not an executable file`,
    });
    const notExec = file(join(dir, 'python'), 0o644, 'not a program\n');
    const other = file(join(dir, 'b.sh'), 0o755, `#!${notExec} -u\n`);
    expect(resolveCommand(other, {})).toEqual({
      ok: false,
      code: 126,
      message: `job command "${other}" starts with "#!${notExec}", and ${notExec} is not executable (chmod +x)`,
    });
  });

  it('reads only the interpreter: up to a space or a tab, after blanks, on the first line', () => {
    const missing = '/opt/lk-none/bin/tool';
    for (const line of [`#!${missing}\t-x`, `#!  ${missing} -x`, `#!${missing}`, `#!${missing}\n#!/bin/sh`]) {
      const script = file(join(dir, 'job.sh'), 0o755, `${line}\n`);
      expect(resolveCommand(script, {}), line).toEqual({
        ok: false,
        code: 127,
        message: `job command "${script}" starts with "#!${missing}", and ${missing} does not exist`,
      });
    }
  });

  it('runs what the kernel would: a #! line without newline, an empty one, a relative interpreter, a short binary', () => {
    const cases: [string, string][] = [
      ['nl', '#!/bin/sh'],
      ['empty', '#!\n'],
      ['blank', '#!   \n'],
      ['relative', '#!lk-relative-interpreter\n'],
      ['binary', '\x7fELF'],
      // No #! line: execvp hands it to /bin/sh; its first line is not an interpreter.
      ['no-shebang', '# /opt/lk-none/tool\necho hi\n'],
    ];
    for (const [name, text] of cases) {
      const script = file(join(dir, name), 0o755, text);
      expect(resolveCommand(script, {}), name).toEqual({ ok: true, path: script });
    }
  });
});

describe('resolveCommand: resources', () => {
  it('reading the #! line leaves no file descriptor open (the keeper starts jobs for months)', () => {
    const script = file(join(dir, 'job.sh'), 0o755);
    const open = () => readdirSync('/proc/self/fd').length;
    const before = open();
    for (let i = 0; i < 50; i++) expect(resolveCommand(script, {}).ok).toBe(true);
    expect(open()).toBeLessThan(before + 5);
  });
});
