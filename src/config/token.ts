import { join } from 'node:path';
import type { ConfigSystem } from './system.js';
import type { TokenSource } from './types.js';

/**
 * The bearer token comes from exactly one of three sources. Problems name the source and, for files,
 * the path; never the token, not even a part of it.
 */
export type TokenResult =
  | { ok: true; token: string; source: TokenSource }
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
  if (only.value !== undefined) return checkToken(only.value, only, `${PAT}: the token`);
  const path = only.path!;
  const where = `${only.label} = ${JSON.stringify(path)}`;
  const read = sys.readSecretFile(path);
  if (!read.ok) return { ok: false, problems: [`${where}: ${read.reason}; it must be a readable file holding the token`] };
  seen.push(read.text, read.text.trim());
  if ((read.mode & 0o077) !== 0) {
    const mode = (read.mode & 0o777).toString(8).padStart(4, '0');
    return {
      ok: false,
      problems: [
        `${where}: the token file is accessible to group or others (mode ${mode}); ` +
          `it must be readable by its owner only: chmod 600 ${shellQuote(path)}`,
      ],
    };
  }
  return checkToken(read.text, only, `${where}: the token in the file`);
}

/** Trims surrounding whitespace (the trailing newline of `echo … > file`), then checks what is left. */
function checkToken(raw: string, c: Candidate, what: string): TokenResult {
  const token = raw.trim();
  if (token === '') return { ok: false, problems: [`${what} is empty; ${c.path === undefined ? 'set the token' : 'write the token into it'}`] };
  if (!TOKEN_CHARS.test(token)) {
    return {
      ok: false,
      problems: [`${what} contains whitespace, control or non-ASCII characters; it must be the token alone, on one line`],
    };
  }
  return { ok: true, token, source: c.source };
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}

function shellQuote(path: string): string {
  return /^[A-Za-z0-9_./@%+=:,-]+$/.test(path) ? path : `'${path.replace(/'/g, `'\\''`)}'`;
}
