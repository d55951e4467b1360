import { join } from 'node:path';
import type { Credential } from '../api/client.js';
import { nodeConfigSystem, type ConfigSystem } from './system.js';
import type { TokenSource } from './types.js';

/**
 * The bearer token comes from exactly one of three sources. Problems name the source and, for files,
 * the path; never the token, not even a part of it.
 */
export type TokenResult =
  | { ok: true; token: string; source: TokenSource; /** The file it came from; null for QODER_PAT. */ path: string | null }
  | { ok: false; problems: string[] };

export const CREDENTIAL_NAME = 'qoder-pat';
const PAT = 'QODER_PAT';
const PAT_FILE = 'QODER_PAT_FILE (--pat-file)';
const CREDENTIAL = `$CREDENTIALS_DIRECTORY/${CREDENTIAL_NAME}`;
const ONE_OF = `set exactly one of QODER_PAT, QODER_PAT_FILE (--pat-file), or the systemd credential ${CREDENTIAL_NAME} (LoadCredential=${CREDENTIAL_NAME}:…)`;

/** Printable ASCII only: anything else cannot go into an Authorization header as is. */
const TOKEN_CHARS = /^[\x21-\x7e]+$/;

interface Candidate {
  source: TokenSource;
  label: string;
  /** Where a file source points; absent for QODER_PAT. */
  path?: string;
  /** QODER_PAT's value. */
  value?: string;
}

/**
 * Finds the sources that are set (QODER_PAT non-empty, a token file path from --pat-file or
 * QODER_PAT_FILE, the credential file when it exists), requires exactly one, and reads it.
 * `seen` collects every secret-looking text read on the way, even an invalid one, so that the
 * caller can scrub it from all problems.
 */
export function resolveToken(
  env: NodeJS.ProcessEnv,
  patFileFlag: string | undefined,
  sys: ConfigSystem,
  seen: string[],
): TokenResult {
  const candidates: Candidate[] = [];
  const pat = nonEmpty(env.QODER_PAT);
  if (pat !== undefined) {
    // The token is the trimmed value (checkToken): scrub that form too, as for token files below.
    seen.push(pat, pat.trim());
    candidates.push({ source: 'QODER_PAT', label: PAT, value: pat });
  }
  const patFile = patFileFlag ?? nonEmpty(env.QODER_PAT_FILE);
  if (patFile !== undefined) candidates.push({ source: 'QODER_PAT_FILE', label: PAT_FILE, path: patFile });
  const credDir = nonEmpty(env.CREDENTIALS_DIRECTORY);
  if (credDir !== undefined) {
    const path = join(credDir, CREDENTIAL_NAME);
    if (sys.exists(path)) candidates.push({ source: 'CREDENTIALS_DIRECTORY', label: CREDENTIAL, path });
  }

  if (candidates.length === 0) return { ok: false, problems: [`${PAT}: no token: ${ONE_OF}`] };
  if (candidates.length > 1) {
    const names = candidates.map((c) => c.label).join(' and ');
    return { ok: false, problems: [`${names}: ${candidates.length} token sources are set, which one to use is ambiguous: ${ONE_OF}`] };
  }

  const only = candidates[0]!;
  if (only.value !== undefined) {
    const checked = checkToken(only.value, only.path, `${PAT}: the token`);
    return checked.ok ? { ok: true, token: checked.token, source: only.source, path: null } : { ok: false, problems: [checked.problem] };
  }
  const read = readTokenFile(only.path!, only.label, sys, seen);
  return read.ok ? { ok: true, token: read.token, source: only.source, path: only.path! } : { ok: false, problems: [read.problem] };
}

type TokenCheck = { ok: true; token: string } | { ok: false; problem: string };

/**
 * Reads and checks a token file: readable, a regular file, owner-only permissions, one token on one line.
 * The same rules at start-up and on every re-read (rotation). `seen` collects what was read, for scrubbing.
 */
function readTokenFile(path: string, label: string, sys: ConfigSystem, seen: string[]): TokenCheck {
  const where = `${label} = ${JSON.stringify(path)}`;
  const read = sys.readSecretFile(path);
  if (!read.ok) return { ok: false, problem: `${where}: ${read.reason}; it must be a readable file holding the token` };
  seen.push(read.text, read.text.trim());
  if ((read.mode & 0o077) !== 0) {
    const mode = (read.mode & 0o777).toString(8).padStart(4, '0');
    return {
      ok: false,
      problem:
        `${where}: the token file is accessible to group or others (mode ${mode}); ` +
        `it must be readable by its owner only: chmod 600 ${shellQuote(path)}`,
    };
  }
  return checkToken(read.text, path, `${where}: the token in the file`);
}

/** Trims surrounding whitespace (the trailing newline of `echo … > file`), then checks what is left. */
function checkToken(raw: string, path: string | undefined, what: string): TokenCheck {
  const token = raw.trim();
  if (token === '') return { ok: false, problem: `${what} is empty; ${path === undefined ? 'set the token' : 'write the token into it'}` };
  if (!TOKEN_CHARS.test(token)) {
    return { ok: false, problem: `${what} contains whitespace, control or non-ASCII characters; it must be the token alone, on one line` };
  }
  return { ok: true, token };
}

/** What a re-read found. `problem` names why a new file was refused (never its content). */
export type TokenReload =
  | { result: 'rotated' | 'unchanged' }
  | { result: 'refused'; problem: string }
  | { result: 'not_reloadable'; problem: string };

/** Who hears about re-reads (the run command logs them). Called after `held` has the new token. */
export interface CredentialEvents {
  reloaded(trigger: 'auth' | 'sighup', outcome: TokenReload): void;
}

/**
 * The keeper's token and the source it came from, re-readable for rotation (spec §5): QODER_PAT_FILE or
 * the credential file are read again on a 401/403 (through the API client's `reread`) and on SIGHUP
 * (`reload`). A new token replaces the old only if the file passes the start-up checks; otherwise the
 * old token is kept and the problem reported. QODER_PAT cannot change while the process runs.
 */
export class TokenCredential implements Credential {
  readonly #held: string[];
  #current: string;

  constructor(
    token: string,
    readonly source: TokenSource,
    /** The file re-read on rotation; null for QODER_PAT. */
    readonly path: string | null,
    private readonly events: CredentialEvents | null = null,
    private readonly sys: ConfigSystem = nodeConfigSystem,
  ) {
    this.#current = token;
    this.#held = [token];
  }

  /** Every token held so far, the current one included; only grows (scrubbers and the job's environment use it). */
  get held(): readonly string[] {
    return this.#held;
  }

  current(): string {
    return this.#current;
  }

  reread(): string {
    this.reload('auth');
    return this.#current;
  }

  /** Reads the source again; a valid new token becomes current. */
  reload(trigger: 'auth' | 'sighup'): TokenReload {
    const outcome = this.#read();
    this.events?.reloaded(trigger, outcome);
    return outcome;
  }

  #read(): TokenReload {
    if (this.path === null) {
      return { result: 'not_reloadable', problem: `${PAT} cannot change while the keeper runs; to rotate without a restart, use QODER_PAT_FILE or LoadCredential=` };
    }
    const label = this.source === 'CREDENTIALS_DIRECTORY' ? CREDENTIAL : PAT_FILE;
    const read = readTokenFile(this.path, label, this.sys, []);
    if (!read.ok) return { result: 'refused', problem: `${read.problem}; the token in use is kept` };
    if (read.token === this.#current) return { result: 'unchanged' };
    // Held (and so scrubbed everywhere) before anything can print or send it.
    if (!this.#held.includes(read.token)) this.#held.push(read.token);
    this.#current = read.token;
    return { result: 'rotated' };
  }
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}

function shellQuote(path: string): string {
  return /^[A-Za-z0-9_./@%+=:,-]+$/.test(path) ? path : `'${path.replace(/'/g, `'\\''`)}'`;
}
