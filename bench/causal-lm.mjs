// Causal language models (issue 15) on a GPT-2-small-sized stack: hidden 768, 12 heads, intermediate 3072, vocabulary
// 50,257, 1,024 positions, the LM head tied to the token embeddings, with 2 layers instead of 12 (as bench/bert.mjs
// shortens BERT-base) so a step fits a 2-core machine; the LM head over the full vocabulary stays. Two suites:
// - `causal-lm`: a DoRA training step (forward + backward of the causal-LM loss, DoRA r 8 on c_attn, PEFT's default
//   target for gpt2, dropout on) in tokens/s at 8 × 128 and 1 × 512 tokens;
// - `generate`: greedy generation with the key/value cache (prompt 32 tokens, 64 new tokens, batch 1 and 8) in new
//   tokens/s, the prompt's pass included.
// Each against the same model written in plain PyTorch (bench/torch/gpt2.py) in the same run, on as many threads,
// where Debian's python3-torch is installed.
import { spawnSync } from 'node:child_process';

import Benchmark from 'benchmark';

import { median } from './baselines.mjs';
import { pythonWithTorch } from './python.mjs';

export const shape = { hidden: 768, heads: 12, layers: 2, vocab: 50257, positions: 1024, r: 8, alpha: 16 };
const trainCases = [
  { batch: 8, seq: 128 },
  { batch: 1, seq: 512 },
];
const generateCases = [
  { batch: 1, prompt: 32, newTokens: 64 },
  { batch: 8, prompt: 32, newTokens: 64 },
];

export function makeModel(bidora) {
  return bidora.models.fromConfig({
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    vocab_size: shape.vocab,
    n_embd: shape.hidden,
    n_head: shape.heads,
    n_layer: shape.layers,
    n_positions: shape.positions,
    activation_function: 'gelu_new',
  });
}

/** [batch][seq] token ids from a fixed linear congruential stream. */
export function tokenRows(seed, batch, seq) {
  let state = seed;
  const next = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0);
  return Array.from({ length: batch }, () => Array.from({ length: seq }, () => next() % shape.vocab));
}

function torchBaseline(mode, cases, quick, threads) {
  const script = new URL('./torch/gpt2.py', import.meta.url).pathname;
  const args = [script, mode, JSON.stringify(shape), JSON.stringify(cases), quick ? '1' : '0', String(threads)];
  const result = spawnSync(pythonWithTorch(), args, { encoding: 'utf8' });
  if (result.status !== 0) {
    console.log(`PyTorch baseline skipped: ${result.stderr.trim().split('\n').at(-1)}`);
    return null;
  }
  return JSON.parse(result.stdout.trim().split('\n').at(-1));
}

function benchmarkOptions(quick) {
  return { maxTime: quick ? 0.5 : 6, minSamples: quick ? 2 : 5 };
}

export function runCausalLm(bidora, { quick, threads }) {
  const previousThreads = bidora.setNumThreads(threads);
  const model = makeModel(bidora);
  bidora.adapters.apply(model, { method: 'dora', r: shape.r, alpha: shape.alpha, targetModules: ['c_attn'] });
  model.train();
  const rows = trainCases.map(({ batch, seq }, index) => {
    const inputIds = tokenRows(index + 1, batch, seq);
    // Loss on every token, as a `{ "text" }` example trains.
    const inputs = { inputIds, labels: inputIds };
    let seconds;
    new Benchmark(
      `dora ${batch}x${seq}`,
      () => {
        bidora.tidy(() => model.forward(inputs).loss.backward());
        for (const parameter of model.parameters()) {
          parameter.grad?.dispose();
          parameter.grad = undefined;
        }
      },
      { ...benchmarkOptions(quick), onComplete: (event) => (seconds = median(event.target.stats.sample)) },
    ).run();
    return {
      method: 'dora',
      threads,
      ...shape,
      batch,
      seq,
      msPerStep: seconds * 1e3,
      tokensPerSecond: (batch * seq) / seconds,
    };
  });
  model.dispose();
  bidora.setNumThreads(previousThreads);
  const torch = torchBaseline('train', trainCases, quick, threads);
  for (const [index, row] of rows.entries()) {
    const theirs = torch?.results[index];
    if (theirs) {
      Object.assign(row, {
        torchVersion: torch.version,
        torchMsPerStep: theirs.msPerStep,
        torchTokensPerSecond: (row.batch * row.seq) / (theirs.msPerStep / 1e3),
        ratio: theirs.msPerStep / row.msPerStep,
      });
    }
    console.log(
      `dora ${`${row.batch}×${row.seq}`.padEnd(6)} ${threads}t  ${row.msPerStep.toFixed(1).padStart(7)} ms/step  ` +
        `${row.tokensPerSecond.toFixed(0).padStart(6)} tokens/s` +
        (theirs
          ? `  PyTorch ${torch.version}: ${theirs.msPerStep.toFixed(1)} ms/step, ${row.torchTokensPerSecond.toFixed(0)} ` +
            `tokens/s; bidora ${row.ratio.toFixed(2)}× as fast`
          : ''),
    );
  }
  return rows;
}

/** Median seconds of one `model.generate` call (the benchmark package's deferred mode, generate being async). */
function timeGenerate(name, model, inputs, options, quick) {
  return new Promise((resolve, reject) => {
    new Benchmark(name, {
      defer: true,
      fn: (deferred) => model.generate(inputs, options).then(() => deferred.resolve(), reject),
      ...benchmarkOptions(quick),
      onComplete: (event) => resolve(median(event.target.stats.sample)),
    }).run();
  });
}

export async function runGenerate(bidora, { quick, threads }) {
  const previousThreads = bidora.setNumThreads(threads);
  const model = makeModel(bidora);
  const rows = [];
  for (const [index, { batch, prompt, newTokens }] of generateCases.entries()) {
    const inputs = { inputIds: tokenRows(index + 1, batch, prompt) };
    // eos none: every run produces all newTokens tokens, as the PyTorch loop does.
    const options = { maxNewTokens: newTokens, eosTokenId: null };
    const check = await model.generate(inputs, options);
    if (check.sequences.some((row) => row.length !== prompt + newTokens)) throw new Error('generate: wrong length');
    const seconds = await timeGenerate(`greedy ${batch}`, model, inputs, options, quick);
    rows.push({
      method: 'greedy',
      threads,
      ...shape,
      batch,
      prompt,
      newTokens,
      msPerRun: seconds * 1e3,
      tokensPerSecond: (batch * newTokens) / seconds,
    });
  }
  model.dispose();
  bidora.setNumThreads(previousThreads);
  const torch = torchBaseline('generate', generateCases, quick, threads);
  for (const [index, row] of rows.entries()) {
    const theirs = torch?.results[index];
    if (theirs) {
      Object.assign(row, {
        torchVersion: torch.version,
        torchMsPerRun: theirs.msPerRun,
        torchTokensPerSecond: (row.batch * row.newTokens) / (theirs.msPerRun / 1e3),
        ratio: theirs.msPerRun / row.msPerRun,
      });
    }
    console.log(
      `greedy batch ${String(row.batch).padEnd(2)} ${threads}t  ${row.msPerRun.toFixed(1).padStart(7)} ms/run  ` +
        `${row.tokensPerSecond.toFixed(1).padStart(7)} new tokens/s` +
        (theirs
          ? `  PyTorch ${torch.version}: ${theirs.msPerRun.toFixed(1)} ms/run, ${row.torchTokensPerSecond.toFixed(1)} ` +
            `new tokens/s; bidora ${row.ratio.toFixed(2)}× as fast`
          : ''),
    );
  }
  return rows;
}
