/** The local control plane: the Qoder work API, its state machine, lease expiry, faults and an admin API. */
export { startEmulator, SWEEP_INTERVAL_MS, type Emulator } from './server.js';
export { EmulatorCore, DEFAULT_SETTINGS, parseSettingsPatch, type QueueOptions } from './core.js';
export { WorkStore, TTL_MIN, TTL_MAX, TAKEOVER_HOLDER } from './store.js';
export { EVENT_TYPES, EventLog } from './events.js';
export { FAULT_KINDS, type Fault, type FaultKind, type FaultSpec } from './faults.js';
export { formatMicros, manualClock, realClock, type EmulatorClock } from './clock.js';
export { METADATA_LIMITS } from './metadata.js';
export { TokenRegistry, tokenFingerprint, type AdminToken, type TokenView } from './tokens.js';
export type { WorkPage } from './queries.js';
export type { WorkQueueStats } from '../api/types.js';
export {
  EmulatorError,
  WORK_ENDPOINTS,
  type AdminItem,
  type AdminLease,
  type EmulatorEvent,
  type EmulatorOptions,
  type EmulatorSettings,
  type EnvironmentType,
  type WorkEndpoint,
} from './types.js';
