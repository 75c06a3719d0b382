#!/usr/bin/env node
// The bidora command line: demo, train, eval, merge.
import { UsageError } from './args';

const commands: Record<string, { summary: string; run: (argv: string[]) => Promise<void> }> = {
  demo: {
    summary: 'pretrain a small encoder and compare head-only, LoRA, DoRA, BiDoRA and full fine-tuning on it',
    run: async (argv) => (await import('./demo')).demoCommand(argv),
  },
  train: {
    summary: 'fine-tune a Hugging Face BERT-family checkpoint on a JSONL/CSV file; writes a PEFT adapter',
    run: async (argv) => (await import('./train')).trainCommand(argv),
  },
  eval: {
    summary: 'score a trained adapter on a data file',
    run: async (argv) => (await import('./evaluate')).evalCommand(argv),
  },
  merge: {
    summary: 'fold an adapter into the base weights and save a plain checkpoint',
    run: async (argv) => (await import('./evaluate')).mergeCommand(argv),
  },
};

function usage(): string {
  const lines = Object.entries(commands).map(([name, { summary }]) => `  ${name.padEnd(8)} ${summary}`);
  return `Usage: bidora <command> [options]\n\nCommands:\n${lines.join('\n')}\n\nRun bidora <command> --help for its options.\n`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return 0;
  }
  const command = commands[name];
  if (command === undefined) {
    process.stderr.write(`bidora: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  try {
    await command.run(rest);
    return 0;
  } catch (error) {
    if (error instanceof UsageError || error instanceof RangeError || error instanceof TypeError) {
      process.stderr.write(`bidora ${name}: ${(error as Error).message}\n`);
      return 2;
    }
    throw error;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (error: unknown) => {
      process.stderr.write(`bidora: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
