// One adapted layer, forward + backward: LoRA, bidora's fused DoRA (norm detached, and through the norm as BiDoRA
// trains it), and a naive DoRA built from bidora's own ops the way PEFT computes it (B·A materialised, the full row
// norm of W0 + s·B·A), timed side by side; PyTorch as a second baseline where Debian's python3-torch is installed. Two
// settings: the layer's input is data (no input gradient, as in a first layer and as PEFT benchmarks time a layer),
// and an inner layer (input gradient too). The layers and the timing are the package's own (`bidora/bench`, what
// `bidora bench` runs), so this suite and the CLI measure the same thing.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

import { pythonWithTorch } from './python.mjs';

const require = createRequire(import.meta.url);
const { benchLayers, DEFAULT_SHAPES, formatLayerTable, LAYER_SETTINGS } = require('bidora/bench');

const shapes = DEFAULT_SHAPES;
const settings = LAYER_SETTINGS;

function torchBaseline(threads, quick) {
  const script = new URL('./torch/dora.py', import.meta.url).pathname;
  const result = spawnSync(
    pythonWithTorch(),
    [script, JSON.stringify(shapes), JSON.stringify(settings), String(threads), quick ? '1' : '0'],
    { encoding: 'utf8' },
  );
  if (result.status !== 0) {
    const reason = result.stderr.includes('No module named') ? 'python3-torch is not installed' : result.stderr;
    console.log(`PyTorch baseline skipped: ${reason.trim().split('\n').at(-1)}`);
    return null;
  }
  return JSON.parse(result.stdout.trim().split('\n').at(-1));
}

export function runDora(_bidora, { quick, threads }) {
  const rows = benchLayers({ shapes, settings, threads, quick });
  console.log(formatLayerTable(rows));
  const torch = torchBaseline(threads, quick);
  if (torch !== null) {
    for (const [index, entry] of torch.entries()) {
      const row = rows[index];
      Object.assign(row, { torchLoraMs: entry.loraMs, torchDoraMs: entry.doraMs });
      console.log(
        `PyTorch ${entry.version} ${row.setting} (N,K,M,r)=(${row.n},${row.k},${row.m},${row.r})`.padEnd(58) +
          ` LoRA ${entry.loraMs.toFixed(2)} ms  PEFT-style DoRA ${entry.doraMs.toFixed(2)} ms  ` +
          `(bidora fused DoRA ${(entry.doraMs / row.doraMs).toFixed(2)}× faster)`,
      );
    }
  }
  return rows;
}
