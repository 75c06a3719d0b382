#!/usr/bin/env node
// The bidora command line: demo, train, eval, merge, generate, sweep, bench.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { CommandError, UsageError } from './args';

const commands: Record<string, { summary: string; run: (argv: string[]) => Promise<void> }> = {
  demo: {
    summary: 'compare head-only, LoRA, DoRA, BiDoRA (± retraining) and full fine-tuning on a small encoder',
    run: async (argv) => (await import('./demo')).demoCommand(argv),
  },
  train: {
    summary:
      'fine-tune a BERT-family encoder or a GPT-2/Llama/Qwen2 language model on a data file; writes a PEFT adapter',
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
  generate: {
    summary: 'continue prompts with a causal language model (and an adapter); scores completions from a data file',
    run: async (argv) => (await import('./generate')).generateCommand(argv),
  },
  sweep: {
    summary: "map BiDoRA's settings against DoRA over paired seeds on a task; writes a table and a chart",
    run: async (argv) => (await import('./sweep')).sweepCommand(argv),
  },
  bench: {
    summary: 'time LoRA, DoRA, DoRA through the norm and a naive DoRA on your layer shapes; prints ratios',
    run: async (argv) => (await import('./bench')).benchCommand(argv),
  },
};

function usage(): string {
  const lines = Object.entries(commands).map(([name, { summary }]) => `  ${name.padEnd(8)} ${summary}`);
  return `Usage: bidora <command> [options]\n\nCommands:\n${lines.join('\n')}\n\nRun bidora <command> --help for its options; bidora --version prints the version.\n`;
}

/** Read from package.json rather than the addon, so that it prints even where the addon does not load. */
function packageVersion(): string {
  // lib/cli/ under the tests, dist/cli/ when installed: package.json is two folders up from both.
  const path = join(__dirname, '..', '..', 'package.json');
  return (JSON.parse(readFileSync(path, 'utf8')) as { version: string }).version;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return 0;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write(`${packageVersion()}\n`);
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
    // The one place that names the command: messages thrown below carry no prefix of their own.
    if (error instanceof UsageError || error instanceof RangeError || error instanceof TypeError) {
      process.stderr.write(`bidora ${name}: ${error.message}\n`);
      return 2;
    }
    if (error instanceof CommandError) {
      process.stderr.write(`bidora ${name}: ${error.message}\n`);
      return 1;
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
