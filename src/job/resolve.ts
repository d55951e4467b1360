import { accessSync, closeSync, constants, openSync, readSync, statSync } from 'node:fs';
import { delimiter, isAbsolute, join, resolve as resolvePath } from 'node:path';

/** Where to look when the job's environment has no PATH (libuv's and glibc's default). */
export const DEFAULT_PATH = '/usr/bin:/bin';

/** The outcome of looking up a job command: an absolute path to run, or a shell-style failure (127/126). */
export type Resolution =
  | { ok: true; path: string }
  | { ok: false; code: 126 | 127; message: string };

/**
 * Finds the file a job command names, the way execvp would, but before anything is spawned, so that an
 * unrunnable job is reported with a clear message instead of an 'error' event. A name with a slash is a
 * path (relative to `cwd`, default the keeper's); otherwise the job's own PATH is searched.
 */
export function resolveCommand(command: string, env: NodeJS.ProcessEnv, cwd: string = process.cwd()): Resolution {
  if (command.length === 0) return { ok: false, code: 127, message: 'job command is empty' };
  if (command.includes('\0')) return { ok: false, code: 127, message: 'job command contains a NUL byte' };

  if (command.includes('/')) {
    const path = isAbsolute(command) ? command : resolvePath(cwd, command);
    const problem = whyNotRunnable(path);
    if (problem === null) return checkInterpreter(command, path);
    if (problem === 'missing') return { ok: false, code: 127, message: `job command "${command}" does not exist` };
    return { ok: false, code: 126, message: describe(`job command "${command}"`, problem) };
  }

  const searchPath = env.PATH ?? DEFAULT_PATH;
  // Empty PATH entries mean "the current directory" to execvp; a daemon should not run whatever sits in its cwd.
  const dirs = searchPath.split(delimiter).filter((d) => d.length > 0);
  let firstUnrunnable: { path: string; problem: Exclude<Problem, 'missing'> } | null = null;
  for (const dir of dirs) {
    const path = resolvePath(cwd, join(dir, command));
    const problem = whyNotRunnable(path);
    if (problem === null) return checkInterpreter(command, path);
    // Like execvp: a match we cannot run does not stop the search, but it is what we report if nothing runs.
    if (problem !== 'missing') firstUnrunnable ??= { path, problem };
  }
  if (firstUnrunnable) {
    return { ok: false, code: 126, message: describe(`job command "${command}" found at ${firstUnrunnable.path} but it`, firstUnrunnable.problem) };
  }
  return {
    ok: false,
    code: 127,
    message: `job command "${command}" not found in PATH (${searchPath}): install it or give an absolute path`,
  };
}

/**
 * A script whose `#!` interpreter is missing fails in execve with ENOENT, which reads like the script itself
 * is missing (and, through setpriv, only shows up as exit 127 after the lease is taken). Check it here.
 */
function checkInterpreter(command: string, path: string): Resolution {
  const interpreter = readShebang(path);
  if (interpreter === null || !isAbsolute(interpreter)) return { ok: true, path };
  const problem = whyNotRunnable(interpreter);
  if (problem === null) return { ok: true, path };
  const subject = `job command "${command}" starts with "#!${interpreter}", and ${interpreter}`;
  if (problem === 'missing') return { ok: false, code: 127, message: `${subject} does not exist` };
  return { ok: false, code: 126, message: describe(subject, problem) };
}

/** The interpreter named on a `#!` first line, or null (not a script, or not readable: execute-only). */
function readShebang(path: string): string | null {
  const buf = Buffer.alloc(256);
  let n: number;
  try {
    const fd = openSync(path, 'r');
    try {
      n = readSync(fd, buf, 0, buf.length, 0);
    } finally {
      closeSync(fd);
    }
  } catch {
    return null;
  }
  const head = buf.subarray(0, n).toString('latin1');
  if (!head.startsWith('#!')) return null;
  const line = head.slice(2).split('\n', 1)[0] ?? '';
  return line.trim().split(/[ \t]/, 1)[0] || null;
}

type Problem = 'missing' | 'directory' | 'not_file' | 'not_executable';

function whyNotRunnable(path: string): Problem | null {
  let st;
  try {
    // A PATH entry without the command is the common case (every job start searches PATH): no exception
    // for ENOENT, which would cost an Error with its stack each time.
    st = statSync(path, { throwIfNoEntry: false });
  } catch {
    // ENOTDIR, or a directory we may not search: nothing to run there.
    return 'missing';
  }
  // ENOENT, or a dangling symlink.
  if (st === undefined) return 'missing';
  if (st.isDirectory()) return 'directory';
  if (!st.isFile()) return 'not_file';
  try {
    accessSync(path, constants.X_OK);
  } catch {
    return 'not_executable';
  }
  return null;
}

function describe(subject: string, problem: Exclude<Problem, 'missing'>): string {
  switch (problem) {
    case 'directory':
      return `${subject} is a directory, not an executable file`;
    case 'not_file':
      return `${subject} is not a regular file`;
    case 'not_executable':
      return `${subject} is not executable (chmod +x)`;
  }
}
