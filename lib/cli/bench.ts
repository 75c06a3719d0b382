// `bidora bench`: the layer microbenchmarks (LoRA, DoRA, DoRA through the norm, naive DoRA) on the user's shapes,
// printed as a table of times and within-round ratios, optionally written as JSON.
import { cpus } from 'node:os';

import { type Device, native } from '../binding';
import { benchLayers, DEFAULT_SHAPES, formatLayerTable, type LayerShape } from '../bench/index';
import { writeFileAtomic } from '../io/atomic';
import { commandOptions, numberOption, type OptionSpec, type OptionValues, UsageError } from './args';

const SUMMARY =
  'Time one adapted linear layer, forward + backward, as LoRA, DoRA (norm detached, as PEFT), DoRA through the norm ' +
  "(BiDoRA's detachNorm: false) and a naive DoRA (B·A materialised, as PEFT computes it), with the input as data " +
  'and as an inner layer. The variants run interleaved in rounds; each ratio is the median of the ratios within a ' +
  'round, with their range.';

const benchOptions: Record<string, OptionSpec> = {
  shape: {
    type: 'string',
    description: `N,K,M,r: tokens, in-features, out-features, rank (default ${DEFAULT_SHAPES.map(shapeText).join(' and ')})`,
    multiple: true,
  },
  threads: { type: 'string', description: 'kernel threads (default: the whole pool)' },
  device: { type: 'string', description: 'cpu | cuda (see devices())', default: 'cpu' },
  quick: { type: 'boolean', description: 'fewer, shorter rounds: a smoke run' },
  rounds: { type: 'string', description: 'rounds of all variants side by side (default 3 with --quick, else 5)' },
  out: { type: 'string', description: 'also write the results as JSON to this file' },
};

function shapeText({ n, k, m, r }: LayerShape): string {
  return `${n},${k},${m},${r}`;
}

function parseShape(text: string): LayerShape {
  const parts = text.split(',').map((part) => part.trim());
  const values = parts.map(Number);
  if (parts.length !== 4 || parts.some((part) => !/^\d+$/.test(part)) || values.some((v) => v < 1 || v > 2 ** 31)) {
    throw new UsageError(`--shape must be four positive integers N,K,M,r (e.g. 256,4096,4096,16), got "${text}"`);
  }
  const [n, k, m, r] = values;
  if (r > Math.min(k, m)) throw new UsageError(`--shape ${text}: the rank r must be at most K and M`);
  return { n, k, m, r };
}

function integerOption(values: OptionValues, name: string): number | undefined {
  const value = numberOption(values, name);
  if (value !== undefined && (!Number.isInteger(value) || value < 1)) {
    throw new UsageError(`--${name} must be a positive integer, got ${value}`);
  }
  return value;
}

export async function benchCommand(argv: string[]): Promise<void> {
  const values = commandOptions('bench', SUMMARY, argv, benchOptions);
  if (values === undefined) return;
  const shapes = values.shape === undefined ? DEFAULT_SHAPES : (values.shape as string[]).map(parseShape);
  const threads = integerOption(values, 'threads');
  const rounds = integerOption(values, 'rounds');
  const quick = values.quick === true;
  const device = values.device as string;
  if (!native.devices().includes(device)) {
    throw new UsageError(
      `--device ${device} is not available here: this machine runs on ${native.devices().join(' or ')}` +
        (device === 'cuda' ? ' (a CUDA build of bidora and a GPU of compute capability 8.0 or newer are needed)' : ''),
    );
  }
  const out = values.out as string | undefined;

  const info = native.buildInfo();
  const threadCount = threads ?? info.poolThreads;
  process.stdout.write(
    `bidora ${info.version}, ${device === 'cpu' ? `${info.isa} path, ${threadCount} threads` : device}, ` +
      `${cpus()[0]?.model ?? 'unknown CPU'}${quick ? ', quick' : ''}\n`,
  );
  const rows = benchLayers({
    shapes,
    device: device as Device,
    threads: threadCount,
    quick,
    rounds,
    // Progress for long runs; the table comes once all rows are in, so its columns line up.
    onRow: (row) =>
      process.stderr.write(`  ${shapeText(row)} ${row.setting}: DoRA/LoRA ${row.doraOverLora.toFixed(2)}\n`),
  });
  process.stdout.write(
    `\nForward + backward of one layer, median ms per call over ${rows[0].rounds} rounds; ratios: median ` +
      '(range) of the ratios within each round.\n\n' +
      formatLayerTable(rows) +
      '\n',
  );
  if (out !== undefined) {
    const record = {
      command: 'bidora bench',
      date: new Date().toISOString(),
      quick,
      device,
      threads: threadCount,
      buildInfo: info,
      cpu: cpus()[0]?.model,
      rows,
    };
    writeFileAtomic(out, JSON.stringify(record, null, 2) + '\n');
    process.stdout.write(`\nwrote ${out}\n`);
  }
}
