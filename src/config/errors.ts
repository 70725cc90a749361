/** A configuration mistake: the message names what to set. The command exits 2 with it. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}
