/** The job supervisor: start the operator's command in its own process group, stop the whole group. */
export { ProcessGroup, type JobSpec, type StopOptions, type SentSignal, type ProcessGroupDeps } from './process-group.js';
export { SpawnError } from './errors.js';
export { resolveCommand, type Resolution } from './resolve.js';
export { findSetpriv, SETPRIV_PATH } from './launch.js';
