/** The job: start the operator's command inside a containment (cgroup, tag, process group), stop all of it. */
export { ProcessGroup, type JobSpec, type StopOptions, type SentSignal, type ProcessGroupDeps, type OutsideMembers } from './process-group.js';
export {
  RUN_ID_VARIABLE,
  type ContainedJob,
  type Containment,
  type ContainmentKind,
  type ContainmentMode,
  type JobAccounting,
  type SweptJob,
} from './containment.js';
export { CgroupContainment, type JobLimits } from './cgroup.js';
export { ProcessGroupContainment, TagContainment } from './run-tag.js';
export { openContainment, planContainment, type ContainmentChoice } from './open.js';
export { SpawnError } from './errors.js';
export { resolveCommand, type Resolution } from './resolve.js';
export { findSetpriv, SETPRIV_PATH } from './launch.js';
export { JobOutput, resolveJobOutputMode, type JobOutputMode, type JobStdio } from './output.js';
