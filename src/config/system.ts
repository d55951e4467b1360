import { closeSync, constants, fstatSync, openSync, readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';

/** The result of reading a file meant to hold a secret. `reason` never contains the file's content. */
export type SecretFileRead = { ok: true; mode: number; text: string } | { ok: false; reason: string };

/**
 * What loadConfig() reads from the host besides the environment: injectable so that tests can run
 * without touching /etc, and with fake files where real ones cannot show a case (EACCES as root).
 */
export interface ConfigSystem {
  /** The host name, for the default worker id. */
  hostname(): string;
  /** The contents of /etc/machine-id (or /var/lib/dbus/machine-id), trimmed; null if neither is readable. */
  machineId(): string | null;
  /** True if something exists at `path` (for `$CREDENTIALS_DIRECTORY/qoder-pat`). */
  exists(path: string): boolean;
  /** Reads a token file: its permission bits and its text. */
  readSecretFile(path: string): SecretFileRead;
}

/** Token files larger than this are refused: a token is a few dozen bytes. */
export const MAX_SECRET_FILE_BYTES = 64 * 1024;

export const MACHINE_ID_PATHS = ['/etc/machine-id', '/var/lib/dbus/machine-id'] as const;

/** The first non-empty machine id among `paths`, trimmed; null if none is readable. */
export function readMachineId(paths: readonly string[] = MACHINE_ID_PATHS): string | null {
  for (const path of paths) {
    try {
      const id = readFileSync(path, 'utf8').trim();
      if (id !== '') return id;
    } catch {
      // try the next one
    }
  }
  return null;
}

const ERRNO_REASONS: Record<string, string> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EISDIR: 'is a directory, not a file',
  ENOTDIR: 'a component of the path is not a directory',
  ELOOP: 'too many symbolic links',
};

/**
 * Opens once and checks the open descriptor (no stat-then-read race). O_NONBLOCK so that a FIFO
 * given by mistake is refused instead of blocking the start-up forever.
 */
export function readSecretFileFromDisk(path: string): SecretFileRead {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    return { ok: false, reason: `cannot open it: ${ERRNO_REASONS[code] ?? code}` };
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { ok: false, reason: 'not a regular file' };
    if (st.size > MAX_SECRET_FILE_BYTES) {
      return { ok: false, reason: `the file is larger than ${MAX_SECRET_FILE_BYTES / 1024} KiB, not a token` };
    }
    const text = readFileSync(fd, 'utf8');
    return { ok: true, mode: st.mode & 0o7777, text };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    return { ok: false, reason: `cannot read it: ${ERRNO_REASONS[code] ?? code}` };
  } finally {
    closeSync(fd);
  }
}

/** The real host. */
export const nodeConfigSystem: ConfigSystem = {
  hostname: () => hostname(),
  machineId: () => readMachineId(),
  exists: (path) => {
    try {
      statSync(path);
      return true;
    } catch (err) {
      // Present but not stat-able (EACCES) still counts: reading it will then say why it failed.
      const code = (err as NodeJS.ErrnoException).code;
      return code !== 'ENOENT' && code !== 'ENOTDIR';
    }
  },
  readSecretFile: readSecretFileFromDisk,
};
