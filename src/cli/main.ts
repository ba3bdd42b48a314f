import { readFileSync } from 'node:fs';
import { Console } from 'node:console';
import { Command } from 'commander';
import { exitCodeOf } from './exit-codes.js';

/** Every command lives in src/cli/commands/<name>.ts and registers itself here. */
export async function main(argv: string[]): Promise<void> {
  const program = new Command('fhir-rte')
    .description('Realtime export of FHIR changes into Postgres tables')
    .version(packageVersion(), '-V, --version', 'print the version and exit')
    .option('-c, --config <file>', 'configuration file (fhir-rte.yaml or .json)')
    .option('--transformers <dir>', 'directory of transformer files (overrides the configuration)')
    .showHelpAfterError()
    // Throw instead of exiting, so a usage error gets the usage exit code (subcommands inherit this).
    .exitOverride();
  for (const register of await commands(argv)) register(program);
  await program.parseAsync(argv);
}

/**
 * The process around main(): stdout carries only the command's output, an error is one message on
 * stderr, and the exit code says what happened (src/cli/exit-codes.ts).
 */
export async function run(argv: string[]): Promise<void> {
  keepStdoutClean();
  try {
    await main(argv);
    // Done: a library's timer or socket (kafkajs retrying a broker that never answered) must not keep
    // the process alive. Output is written synchronously to pipes and files on Linux, so none is lost.
    process.exit(process.exitCode ?? 0);
  } catch (err) {
    const code = exitCodeOf(err);
    // Commander has already printed its own usage errors, help and version.
    if (!(err instanceof Error && err.name === 'CommanderError')) process.stderr.write(`fhir-rte: ${err instanceof Error ? err.message : String(err)}\n`);
    // Exit now: a library's timer or socket left behind by the failure must not keep the process alive.
    process.exit(code);
  }
}

function keepStdoutClean(): void {
  // Libraries that log with console.* (knex's "Acquire connection error" with its stack, among others)
  // would otherwise write into stdout, between the lines of a command's output or before its --json line.
  globalThis.console = new Console({ stdout: process.stderr, stderr: process.stderr });
  // A reader that stops early (`fhir-rte dead-letter list | head`) closes the pipe: the rest of the output
  // is dropped quietly and the command finishes (closing its database) instead of dying with EPIPE.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.stdout.write = (() => true) as typeof process.stdout.write;
  });
}

/** fhir-rte's package.json is three levels up from dist/src/cli (two from src/cli under the test runner). */
function packageVersion(): string {
  for (const up of ['../../../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(up, import.meta.url), 'utf8')) as { name?: string; version: string };
      if (pkg.name === 'fhir-rte') return pkg.version;
    } catch {
      // not at this level
    }
  }
  return 'unknown';
}

type CommandModule = { register: (program: Command) => void };

/** Every command, in the order help lists them; each module is imported only when it may be run. */
const COMMANDS: Record<string, () => Promise<CommandModule>> = {
  load: () => import('./commands/load.js'),
  schema: () => import('./commands/schema.js'),
  'dead-letter': () => import('./commands/dead-letter.js'),
  demo: () => import('./commands/demo.js'),
  rebuild: () => import('./commands/rebuild.js'),
  start: () => import('./commands/start.js'),
  flatten: () => import('./commands/flatten.js'),
  subscribe: () => import('./commands/subscribe.js'),
  backfill: () => import('./commands/backfill.js'),
  reconcile: () => import('./commands/reconcile.js'),
};

/** Global options that take a value: the word after them is not the command. */
const VALUE_OPTIONS = new Set(['-c', '--config', '--transformers']);

/**
 * The modules to register: only the named command's, when argv names one. Importing every command would
 * load the HTTP server, the Kafka client, metrics and the FHIR client for `load` too: about 0.4 s of a
 * start-up that every run pays. Help, a typo or no command registers them all, so commander lists and
 * suggests as before.
 */
async function commands(argv: string[]): Promise<Array<(program: Command) => void>> {
  const name = commandNamed(argv);
  const wanted = name !== undefined && Object.hasOwn(COMMANDS, name) ? [COMMANDS[name]!] : Object.values(COMMANDS);
  return (await Promise.all(wanted.map((load) => load()))).map((m) => m.register);
}

/** The first word of argv (after node and the script) that is neither an option nor a global option's value. */
function commandNamed(argv: string[]): string | undefined {
  const args = argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (VALUE_OPTIONS.has(arg)) i++;
    else if (!arg.startsWith('-')) return arg;
  }
  return undefined;
}
