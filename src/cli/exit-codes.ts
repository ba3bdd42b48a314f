import { CommanderError } from 'commander';
import { ConfigError, ConfigErrors } from '../config/config-error.js';

/**
 * What a fhir-rte process's exit code says, so cron, CI and supervisors can tell outcomes apart without
 * reading its output. Documented in README.md ("Exit codes"); never renumber one.
 */
export const ExitCode = {
  ok: 0,
  /** Anything else that stopped the command: an unreachable database, a fatal database fault. */
  failure: 1,
  /** A bad command line, configuration or transformer file: nothing was done. */
  usage: 2,
  /** The database's tables differ from the transformers: nothing was changed. */
  drift: 3,
  /** `rebuild`: some stored resources could not be flattened by the current transformers. */
  notFlattened: 4,
  /** `load`: it finished, but some input was dead-lettered. */
  deadLettered: 5,
} as const;

/** A command line or configuration that cannot be acted on (exit code 2): a bad option value, a missing section. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** The database's tables differ from the transformers (exit code 3). */
export class DriftError extends Error {
  override readonly name = 'DriftError';
}

export function exitCodeOf(err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
  if (err instanceof ConfigError || err instanceof ConfigErrors || err instanceof UsageError) return ExitCode.usage;
  if (err instanceof DriftError) return ExitCode.drift;
  return ExitCode.failure;
}
