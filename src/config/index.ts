/** Configuration of `run` and `config` (spec §3): flags, one-pass validation, printing. */
export { addConfigOptions, SETTINGS, type Setting, type SettingName } from './options.js';
export {
  loadConfig,
  redactConfig,
  formatProblems,
  NO_COMMAND_PROBLEM,
  type LoadConfigInput,
  type LoadConfigResult,
} from './load.js';
export {
  nodeConfigSystem,
  readMachineId,
  readSecretFileFromDisk,
  type ConfigSystem,
  type SecretFileRead,
} from './system.js';
export { defaultWorkerId, isLoopbackHost } from './values.js';
export { TokenCredential, type CredentialEvents, type TokenReload } from './token.js';
export type { Config, LogLevel, OnShutdown, ShutdownMode, TokenSource } from './types.js';
