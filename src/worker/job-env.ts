import type { WorkItem } from '../api/types.js';

/** Variables the job must never see: the token's sources and systemd's notify channel (spec §3). */
const WITHHELD = ['QODER_PAT', 'QODER_PAT_FILE', 'CREDENTIALS_DIRECTORY', 'NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID'];

/**
 * The job's environment: the keeper's, plus the work ids and the item as JSON, minus the token
 * sources and the notify variables. Any other variable that holds a token the keeper has held (the one it
 * started with, or one rotated in since) is dropped too.
 */
export function jobEnvironment(base: NodeJS.ProcessEnv, item: WorkItem, tokens: readonly string[]): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(base)) {
    if (v === undefined || WITHHELD.includes(k)) continue;
    if (tokens.some((t) => t.length > 0 && v.includes(t))) continue;
    env[k] = v;
  }
  env.LEASE_KEEPER_WORK_ID = item.id;
  env.LEASE_KEEPER_ENVIRONMENT_ID = item.environment_id;
  env.LEASE_KEEPER_SESSION_ID = item.data.id;
  env.LEASE_KEEPER_WORK = JSON.stringify(item);
  return env;
}
