// What is measured: the build every keeper runs (a private copy), the commit, the machine.
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** The keeper executable every benchmark runs; snapshotBuild() points it at a private copy. */
export const paths = { bin: join(ROOT, 'bin/lease-keeper'), dist: join(ROOT, 'dist') };

/**
 * Copies bin/ and dist/ (with package.json, node_modules linked) to `dir` and runs everything from
 * there: others may rebuild dist/ while a run is in progress, and every benchmark must run one build.
 */
export function snapshotBuild(dir: string): void {
  mkdirSync(dir, { recursive: true });
  cpSync(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true });
  cpSync(join(ROOT, 'bin'), join(dir, 'bin'), { recursive: true });
  copyFileSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  paths.bin = join(dir, 'bin/lease-keeper');
  paths.dist = join(dir, 'dist');
}

/** Newest modification time under dist/: the build the keepers run. */
export function distStamp(): number {
  let newest = 0;
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  walk(join(ROOT, 'dist'));
  return newest;
}

export interface GitState {
  commit: string | null;
  src_dirty: boolean | null;
  dist_rebuilt_during_run?: boolean;
}

/** The commit checked out, and whether src/ differs from it (others may be editing it). */
export function gitState(): GitState {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
    return { commit, src_dirty: dirty };
  } catch {
    return { commit: null, src_dirty: null };
  }
}

export interface Machine {
  node: string;
  cores: number | null;
  cpu_model: string;
  kernel: string;
}

export function machine(): Machine {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown';
  let nproc: number | null;
  try {
    nproc = Number(execFileSync('nproc', { encoding: 'utf8' }).trim());
  } catch {
    nproc = null;
  }
  return { node: process.version, cores: nproc, cpu_model: model, kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim() };
}
