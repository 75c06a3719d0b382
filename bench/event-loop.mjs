// How free the host's event loop stays while a BERT-base-sized DoRA fit runs: the main thread's event-loop delay
// (how late a 5 ms timer fires) with fit() on the main thread, against the same fit on a managed worker
// (train.fitInWorker). fit() can only yield between steps, so its delay is about one step; the worker's should be
// near the timer's own resolution.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CONFIG = {
  architectures: ['BertForSequenceClassification'],
  model_type: 'bert',
  vocab_size: 30522,
  hidden_size: 768,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  intermediate_size: 3072,
  max_position_embeddings: 512,
  num_labels: 2,
};
const ADAPTERS = { method: 'dora', r: 8, alpha: 16, targetModules: ['query', 'value'], modulesToSave: ['classifier'] };

function examples(bidora, count, length) {
  const random = new bidora.train.Random(7);
  return Array.from({ length: count }, () => ({
    inputIds: [101, ...Array.from({ length: length - 2 }, () => 1000 + random.int(20000)), 102],
    label: random.int(2),
  }));
}

/**
 * Runs `work` while a 5 ms interval timer measures how late each of its ticks fires (what a service's timers and
 * requests would wait); returns the lateness's p99 and max in milliseconds.
 */
async function delayDuring(work) {
  const delays = [];
  let expected = performance.now() + 5;
  const timer = setInterval(() => {
    const now = performance.now();
    delays.push(Math.max(0, now - expected));
    expected = now + 5;
  }, 5);
  await work();
  clearInterval(timer);
  delays.sort((a, b) => a - b);
  return { p99: delays[Math.floor(0.99 * (delays.length - 1))] ?? 0, max: delays.at(-1) ?? 0, samples: delays.length };
}

export async function runEventLoop(bidora, { quick }) {
  const steps = quick ? 2 : 6;
  const train = examples(bidora, 8 * steps, 128);
  const trainer = { batchSize: 8, maxSteps: steps, seed: 1 };
  const outDir = mkdtempSync(join(tmpdir(), 'bidora-event-loop-'));
  try {
    const mainThread = await delayDuring(async () => {
      const model = bidora.models.fromConfig(CONFIG, { seed: 1 });
      bidora.adapters.apply(model, ADAPTERS);
      const fit = new bidora.train.Trainer({ ...trainer, model });
      await fit.fit(train);
      fit.dispose();
      model.dispose();
    });
    const inWorker = (threads) =>
      delayDuring(() =>
        bidora.train.fitInWorker({
          model: { config: CONFIG, seed: 1 },
          adapters: ADAPTERS,
          trainer: { kind: 'trainer', ...trainer },
          train,
          outDir,
          threads,
        }),
      );
    const poolThreads = bidora.buildInfo().poolThreads;
    const rows = [
      { setting: 'fit() on the main thread', ...mainThread },
      { setting: `fitInWorker, ${poolThreads} threads`, ...(await inWorker(undefined)) },
    ];
    if (poolThreads > 1) {
      rows.push({ setting: `fitInWorker, ${poolThreads - 1} threads`, ...(await inWorker(poolThreads - 1)) });
    }
    for (const row of rows) {
      console.log(
        `${row.setting.padEnd(28)} event-loop delay p99 ${row.p99.toFixed(1).padStart(7)} ms, ` +
          `max ${row.max.toFixed(1).padStart(7)} ms (${row.samples} samples, ${steps} BERT-base DoRA steps, batch 8×128)`,
      );
    }
    console.log(`p99 ratio main thread / worker: ${(mainThread.p99 / rows[1].p99).toFixed(0)}x`);
    return rows;
  } finally {
    rmSync(outDir, { recursive: true, force: true });
  }
}
