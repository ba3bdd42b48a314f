import { Command } from 'commander';

/** Every command lives in src/cli/commands/<name>.ts and registers itself here. */
export async function main(argv: string[]): Promise<void> {
  const program = new Command('fhir-rte')
    .description('Realtime export of FHIR changes into Postgres tables')
    .option('-c, --config <file>', 'configuration file (fhir-rte.yaml or .json)')
    .option('--transformers <dir>', 'directory of transformer files (overrides the configuration)')
    .showHelpAfterError();
  for (const register of await commands()) register(program);
  await program.parseAsync(argv);
}

async function commands(): Promise<Array<(program: Command) => void>> {
  const modules = await Promise.all([
    // one line per command module
    import('./commands/load.js'),
    import('./commands/schema.js'),
    import('./commands/dead-letter.js'),
    import('./commands/demo.js'),
    import('./commands/rebuild.js'),
    import('./commands/start.js'),
    import('./commands/flatten.js'),
  ] as Array<Promise<{ register: (program: Command) => void }>>);
  return modules.map((m) => m.register);
}
