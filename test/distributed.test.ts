// Data-parallel training over MPI, run as CI runs it: `mpirun -n 2 --oversubscribe` over test/fixtures/mpi-child.cjs
// (the compiled package in dist/). Two ranks sharing global batches of 16 end where one process with batches of 16
// ends (Trainer and BiLevelTrainer, 20 steps, shards of unequal weight); a checkpoint written by two ranks resumes in
// one; evaluation sharded over 3 ranks scores every kind of task as one process does; `bidora train` runs under
// mpirun; a rank that is SIGKILLed or hangs ends the run with an error within 30 s. Skipped only in builds without MPI
// (.ci/run asserts that CI's build has it), and the world-of-one and sharding rules are checked in every build.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { buildInfo, models, train } from '../lib/index';
import { lossUnits, shardOf } from '../lib/train/distributed';
import { tinyExamples, tinyModel } from './fixtures/tiny-task';
import { SPECIAL_TOKENS, wordPieceTokenizerJson } from './fixtures/wordpiece';

const root = mkdtempSync(join(tmpdir(), 'bidora-mpi-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const child = join(__dirname, 'fixtures', 'mpi-child.cjs');

interface Job {
  trainer: 'single' | 'bilevel';
  maxSteps: number;
  out: string;
  checkpointDir?: string;
  resume?: boolean;
  timeout?: number;
  fault?: 'kill' | 'hang' | 'throw';
}
interface Outcome {
  world: train.DistributedInfo;
  tensors: Record<string, number[]>;
  losses: number[];
  steps: number;
  evals: train.EvalRecord[];
}

// Root may launch (as in CI's containers); one kernel thread per rank on a machine of two cores.
const env = {
  ...process.env,
  OMPI_ALLOW_RUN_AS_ROOT: '1',
  OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1',
  BIDORA_NUM_THREADS: '1',
};

/** Runs the job in one process (no launcher: a world of one) or under mpirun with `ranks` processes. */
function run(job: Job, ranks: number, mpirunFlags: string[] = []) {
  const args = [child, JSON.stringify(job)];
  const started = Date.now();
  const result =
    ranks === 0
      ? spawnSync(process.execPath, args, { env, encoding: 'utf8', timeout: 120_000 })
      : spawnSync('mpirun', ['-n', String(ranks), '--oversubscribe', ...mpirunFlags, process.execPath, ...args], {
          env,
          encoding: 'utf8',
          timeout: 120_000,
        });
  if (result.error) throw new Error(`${ranks === 0 ? 'node' : 'mpirun'} did not start (${result.error.message})`);
  return { ...result, seconds: (Date.now() - started) / 1000, output: `${result.stdout}${result.stderr}` };
}

function fit(job: Omit<Job, 'out'>, ranks: number): Outcome {
  const out = join(root, `${job.trainer}-${ranks}-${Math.random().toString(36).slice(2)}.json`);
  const result = run({ ...job, out }, ranks);
  if (result.status !== 0) throw new Error(`the fit on ${ranks} rank(s) failed:\n${result.output}`);
  return JSON.parse(readFileSync(out, 'utf8')) as Outcome;
}

/** The largest difference of a tensor's elements relative to its largest element, over every trained tensor. */
function worstRelativeDifference(a: Outcome, b: Outcome): number {
  let worst = 0;
  for (const [name, values] of Object.entries(a.tensors)) {
    const other = b.tensors[name];
    expect(other, name).toHaveLength(values.length);
    const scale = Math.max(...values.map(Math.abs));
    const difference = Math.max(...values.map((value, index) => Math.abs(value - other[index])));
    worst = Math.max(worst, difference / scale);
  }
  return worst;
}

describe('sharding a global batch', () => {
  it('gives every rank a contiguous share, sizes within one, larger first, the batch in order', () => {
    const items = Array.from({ length: 11 }, (_, index) => index);
    for (const worldSize of [1, 2, 3, 4, 11, 13]) {
      const shards = Array.from({ length: worldSize }, (_, rank) => shardOf(items, rank, worldSize));
      expect(shards.flat()).toEqual(items);
      const sizes = shards.map((shard) => shard.length);
      expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
      expect([...sizes].sort((a, b) => b - a)).toEqual(sizes);
      expect(sizes[0]).toBeGreaterThan(0);
    }
  });

  it('weighs a shard by what its loss counts: rows labelled -100 count for nothing', () => {
    const model = tinyModel(3, 0);
    const examples = tinyExamples(10).map((example, index) => (index < 3 ? { ...example, label: -100 } : example));
    expect(lossUnits(model, examples)).toBe(7);
    expect(lossUnits(model, [])).toBe(0);
    model.dispose();
  });

  it('is a world of one, without MPI, outside a launcher', () => {
    expect(train.distributed()).toEqual({ rank: 0, worldSize: 1, backend: 'none' });
    expect(() => train.distributed({ timeout: 0 })).toThrow(/timeout must be a positive number/);
    // The collectives are no-ops here, but still refuse what they could not reduce under a launcher.
    expect(() => train.allreduceMean('x' as never)).toThrow(/allreduceMean: tensors must be an array of Tensors/);
    expect(() => train.broadcastFromRoot([{} as never])).toThrow(TypeError);
    expect(() => train.barrier()).not.toThrow();
  });
});

describe.skipIf(buildInfo().mpi)('a build without MPI (the node-gyp fallback)', () => {
  it('refuses to train when a launcher started several processes, rather than let each train alone', () => {
    const script = `require(${JSON.stringify(join(__dirname, '..', 'dist', 'index.js'))}).train.distributed()`;
    const result = spawnSync(process.execPath, ['-e', script], {
      env: { ...env, OMPI_COMM_WORLD_RANK: '1', OMPI_COMM_WORLD_SIZE: '2' },
      encoding: 'utf8',
    });
    expect(result.status).not.toBe(0);
    expect(result.stderr).toMatch(/started as rank 1 of 2 by an MPI launcher, but this build of bidora has no MPI/);
  });
});

describe.skipIf(!buildInfo().mpi)('data-parallel training under mpirun -n 2 (needs a build with MPI)', () => {
  for (const trainer of ['single', 'bilevel'] as const) {
    it(`${trainer === 'single' ? 'Trainer' : 'BiLevelTrainer'}: 2 ranks × 8 of global batch 16 end as 1 process with 16 (20 steps, 1e-5)`, () => {
      const alone = fit({ trainer, maxSteps: 20 }, 0);
      const shared = fit({ trainer, maxSteps: 20 }, 2);
      expect(alone.world).toEqual({ rank: 0, worldSize: 1, backend: 'none' });
      expect(shared.world).toEqual({ rank: 0, worldSize: 2, backend: 'mpi' });
      expect(shared.steps).toBe(20);
      expect(worstRelativeDifference(alone, shared)).toBeLessThan(1e-5);
      // The reported loss is the global batch's mean, not rank 0's shard's.
      shared.losses.forEach((loss, index) => expect(loss).toBeCloseTo(alone.losses[index], 5));
      // Evaluation sharded over the ranks and combined: the whole held-out set's loss and metrics.
      expect(shared.evals.map((record) => record.step)).toEqual([10, 20]);
      shared.evals.forEach((record, index) => {
        expect(record.loss).toBeCloseTo(alone.evals[index].loss, 5);
        expect(record.metrics).toEqual(alone.evals[index].metrics);
      });
      // And training moved the adapters: equal because both learned the same, not because neither did.
      const untrained = fit({ trainer, maxSteps: 1 }, 0);
      expect(worstRelativeDifference(alone, untrained)).toBeGreaterThan(1e-2);
    });
  }

  it('evaluation sharded over 3 ranks gives every task the predictions, loss and metrics of the whole set', () => {
    const evalChild = join(__dirname, 'fixtures', 'mpi-eval-child.cjs');
    const evaluations = [0, 3].map((ranks) => {
      const out = join(root, `evaluations-${ranks}.json`);
      const args = [evalChild, out];
      const result =
        ranks === 0
          ? spawnSync(process.execPath, args, { env, encoding: 'utf8' })
          : spawnSync('mpirun', ['-n', '3', '--oversubscribe', process.execPath, ...args], { env, encoding: 'utf8' });
      expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
      return JSON.parse(readFileSync(out, 'utf8')) as Record<string, train.Evaluation>;
    });
    const [alone, shared] = evaluations;
    expect(Object.keys(shared)).toEqual(['classification', 'regression', 'multiLabel', 'token', 'causal']);
    for (const [task, evaluation] of Object.entries(alone)) {
      expect(shared[task].predictions, task).toEqual(evaluation.predictions);
      expect(shared[task].loss, task).toBeCloseTo(evaluation.loss, 5);
      expect(Object.keys(shared[task].metrics), task).toEqual(Object.keys(evaluation.metrics));
      for (const [name, value] of Object.entries(evaluation.metrics)) {
        expect(shared[task].metrics[name], `${task} ${name}`).toBeCloseTo(value, 5);
      }
    }
  });

  it('a checkpoint written by 2 ranks resumes in 1 and ends as an uninterrupted run', () => {
    const checkpointDir = join(root, 'resume');
    fit({ trainer: 'bilevel', maxSteps: 10, checkpointDir }, 2);
    const resumed = fit({ trainer: 'bilevel', maxSteps: 20, checkpointDir, resume: true }, 0);
    const uninterrupted = fit({ trainer: 'bilevel', maxSteps: 20 }, 0);
    expect(resumed.steps).toBe(20);
    expect(worstRelativeDifference(uninterrupted, resumed)).toBeLessThan(1e-5);
  });

  it('bidora train under mpirun: both ranks train, rank 0 alone prints and writes the adapter folder', () => {
    const words = ['good', 'great', 'fine', 'bad', 'awful', 'poor'];
    const modelDir = join(root, 'cli-model');
    mkdirSync(modelDir);
    const model = models.fromConfig({
      ...{ architectures: ['BertForSequenceClassification'], model_type: 'bert', vocab_size: 5 + words.length },
      ...{ hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32 },
      ...{ max_position_embeddings: 16, num_labels: 2 },
    });
    models.save(model, modelDir);
    model.dispose();
    writeFileSync(
      join(modelDir, 'tokenizer.json'),
      JSON.stringify(wordPieceTokenizerJson([...SPECIAL_TOKENS, ...words])),
    );
    const rows = Array.from({ length: 48 }, (_, index) => {
      const chosen = [0, 1, 2].map((offset) => words[(index * 7 + offset * 5) % words.length]);
      return JSON.stringify({ text: chosen.join(' '), label: chosen.includes('good') ? 'pos' : 'neg' });
    });
    writeFileSync(join(root, 'cli-train.jsonl'), rows.join('\n') + '\n');
    const out = join(root, 'cli-run');
    const cli = join(__dirname, '..', 'dist', 'cli', 'main.js');
    const result = spawnSync(
      'mpirun',
      [
        '-n',
        '2',
        '--oversubscribe',
        process.execPath,
        cli,
        'train',
        '--model',
        modelDir,
        '--data',
        join(root, 'cli-train.jsonl'),
      ]
        .concat(['--method', 'bidora', '--r', '2', '--target', 'query,value', '--batch-size', '8', '--max-steps', '6'])
        .concat(['--log', 'none', '--out', out]),
      { env, encoding: 'utf8' },
    );
    expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
    expect(result.stdout.match(/bidora: 6 steps/g)).toHaveLength(1);
    expect(result.stderr.match(/trainable params/g)).toHaveLength(1);
    expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);
    expect(JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')).steps).toBe(6);
  });

  it('fitInWorker under mpirun: the worker trains its share, rank 0 writes; MPI then cannot start a second time', () => {
    const out = join(root, 'worker-run');
    const script = join(__dirname, 'fixtures', 'mpi-worker-child.cjs');
    const result = spawnSync('mpirun', ['-n', '2', '--oversubscribe', process.execPath, script, out], {
      env,
      encoding: 'utf8',
    });
    expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
    const losses = [...result.stdout.matchAll(/rank \d: 5 steps, loss ([\d.]+)/g)].map((match) => match[1]);
    expect(losses).toHaveLength(2);
    expect(losses[0]).toBe(losses[1]);
    expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);
    expect(result.stdout.match(/second fit: .*'init' after MPI_Finalize .*MPI runs once per process/g)).toHaveLength(2);
  });

  const faultJob = (fault: 'kill' | 'hang' | 'throw', timeout = 5): Job => ({
    trainer: 'single',
    maxSteps: 1_000_000,
    out: join(root, 'never-written.json'),
    timeout,
    fault,
  });

  it('a rank SIGKILLed mid-run ends the run within 30 s (mpirun aborts the job by default)', () => {
    const result = run(faultJob('kill'), 2);
    expect(result.status).not.toBe(0);
    expect(result.seconds).toBeLessThan(30);
    expect(result.output).toMatch(/rank 1 .*signal 9/);
  });

  it('with the job kept alive (--enable-recovery), the other rank stops with an error naming the collective', () => {
    const result = run(faultJob('kill'), 2, ['--enable-recovery']);
    expect(result.seconds).toBeLessThan(30);
    expect(result.output).toMatch(
      /rank 0 failed after [\d.]+ s: .*allreduceMean of \d+ tensors .* did not complete within 5\.\d s/,
    );
  });

  it('a rank that fails with an error of its own ends the run at once, not after the timeout (no MPI_Finalize)', () => {
    const result = run(faultJob('throw', 300), 2);
    expect(result.status).not.toBe(0);
    expect(result.seconds).toBeLessThan(30);
    expect(result.output).toMatch(/rank 1 failed after [\d.]+ s: rank 1 gives up/);
  });

  it('a rank that hangs ends the run with an error on the other within the timeout', () => {
    const result = run(faultJob('hang'), 2);
    expect(result.status).not.toBe(0);
    expect(result.seconds).toBeLessThan(30);
    expect(result.output).toMatch(
      /rank 0 failed after [\d.]+ s: .*allreduceMean .* on rank 0 of 2 did not complete within 5\.\d s/,
    );
  });
});
