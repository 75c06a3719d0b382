// Faults during training: runs killed at random points resume to exactly the uninterrupted run (weights, best
// record and best weights), a run that goes non-finite stops before publishing anything non-finite and names the
// checkpoint that resumes, and the step history lives beside the checkpoint instead of in its tensor header.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { adapters, io, Tensor, train } from '../lib/index';
import { tinyExamples, tinyModel } from './fixtures/tiny-task';

const root = mkdtempSync(join(tmpdir(), 'bidora-faults-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const child = join(__dirname, 'fixtures', 'fault-child.cjs');
const seed = Number(process.env.BIDORA_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));

/** A small deterministic generator for the kill points, so a failure can be replayed with BIDORA_TEST_SEED. */
function killPoints(state: number) {
  return () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state / 2 ** 32;
  };
}

/**
 * Runs the child until it has printed `steps` step lines and `delayMs` more have passed, then SIGKILLs it (or lets
 * it kill itself, as `env` may ask); resolves with whether it was killed (false when it finished first).
 */
function runAndKill(args: string[], steps: number, delayMs: number, env: NodeJS.ProcessEnv = {}): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const process_ = spawn(process.execPath, [child, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let seen = 0;
    let killing = false;
    process_.stdout.on('data', (chunk: Buffer) => {
      seen += chunk.toString().split('\n').length - 1;
      if (!killing && seen >= steps) {
        killing = true;
        setTimeout(() => process_.kill('SIGKILL'), delayMs);
      }
    });
    process_.on('error', reject);
    process_.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve(true);
      else if (code === 0) resolve(false);
      else reject(new Error(`the fault child exited with ${code ?? signal}`));
    });
  });
}

describe('killed at random points', () => {
  for (const kind of ['trainer', 'bilevel']) {
    it(`${kind}: every interrupted and resumed run ends as the uninterrupted one, best weights and record included`, async () => {
      const whole = join(root, `${kind}-whole.json`);
      execFileSync(process.execPath, [child, kind, join(root, `${kind}-whole`), whole]);
      const expected = JSON.parse(readFileSync(whole, 'utf8')) as { best?: { step: number }; steps: number };
      // The best evaluation must come before the end, or restoring it could not be told from keeping the last step.
      expect(expected.best!.step).toBeLessThan(expected.steps);

      // BiDoRA's run prints 48 step lines, its search's 24 then its retraining's 24, and publishes 24 checkpoints.
      const lines = kind === 'bilevel' ? 44 : 12;
      const publishes = kind === 'bilevel' ? 24 : 3;
      const random = killPoints(seed + (kind === 'bilevel' ? 1 : 0));
      // Runs are killed up to three times each, then resumed to the end and compared, until 20 kills have landed.
      let kills = 0;
      for (let run = 0, killsThisRun = 0, attempts = 0; kills < 20 || killsThisRun > 0; attempts++) {
        expect(attempts, 'attempts to land 20 kills').toBeLessThan(200);
        const args = [kind, join(root, `${kind}-run${run}`), join(root, `${kind}-run${run}.json`)];
        let killed = false;
        if (killsThisRun < 3 && kills < 20) {
          // Mostly at a random step and delay (some land mid-step, some mid-write); a third of the time in the window
          // between appending the history and publishing its checkpoint.
          killed =
            random() < 2 / 3
              ? await runAndKill(args, 1 + Math.floor(random() * lines), Math.floor(random() * 8))
              : await runAndKill(args, Infinity, 0, { KILL_AT_PUBLISH: String(1 + Math.floor(random() * publishes)) });
        } else {
          execFileSync(process.execPath, [child, ...args]);
        }
        if (killed) {
          kills++;
          killsThisRun++;
          continue;
        }
        expect(JSON.parse(readFileSync(args[2], 'utf8')), `run ${run}, seed ${seed}`).toEqual(expected);
        run++;
        killsThisRun = 0;
      }
      expect(kills, `seed ${seed}`).toBeGreaterThanOrEqual(20);
    });
  }

  it('bilevel: a run killed in its retraining phase resumes there, not from the start of the retraining', () => {
    const dir = join(root, 'bilevel-retrain');
    const out = join(root, 'bilevel-retrain.json');
    // Killed as it publishes its 16th checkpoint: the search's 12 and the retraining's first 3 (6 steps) are on disk.
    const killed = spawnSync(process.execPath, [child, 'bilevel', dir, out], {
      env: { ...process.env, KILL_AT_PUBLISH: '16' },
      encoding: 'utf8',
    });
    expect(killed.signal).toBe('SIGKILL');
    expect(killed.stdout.split('\n').length - 1).toBe(32);
    const resumed = execFileSync(process.execPath, [child, 'bilevel', dir, out], { encoding: 'utf8' });
    expect(resumed.split('\n').length - 1, 'steps the resumed run took').toBe(18);
    const wholeFile = join(root, 'bilevel-whole.json'); // the uninterrupted run, made above or here
    if (!existsSync(wholeFile))
      execFileSync(process.execPath, [child, 'bilevel', join(root, 'bilevel-whole'), wholeFile]);
    const whole = JSON.parse(readFileSync(wholeFile, 'utf8')) as unknown;
    expect(JSON.parse(readFileSync(out, 'utf8'))).toEqual(whole);
  });
});

/** Every tensor of the checkpoint in `dir` is finite; returns the number of steps it holds. */
function checkpointSteps(dir: string): number {
  const { tensors, metadata } = io.readSafetensors(join(dir, train.CHECKPOINT_FILE));
  for (const [name, tensor] of tensors) {
    expect(tensor.toFloat32Array().every(Number.isFinite), name).toBe(true);
    tensor.dispose();
  }
  return (JSON.parse(metadata.bidora_training_state) as { steps: number }).steps;
}

describe('a run that goes non-finite', () => {
  const settings = [
    { name: 'Trainer, AdamW', bilevel: false, options: { optimizer: { lr: 1e4 } } },
    { name: 'Trainer, SGD from the first step', bilevel: false, options: { optimizer: { lr: 1e30, type: 'sgd' } } },
    { name: 'BiDoRA, gamma 0', bilevel: true, options: { gamma: 0 } },
    { name: 'BiDoRA, gamma 1e-5', bilevel: true, options: { gamma: 1e-5 } },
    { name: 'BiDoRA, first-order, gamma 1e-5', bilevel: true, options: { gamma: 1e-5, hypergradient: 'first-order' } },
    { name: 'BiDoRA, from the first step', bilevel: true, options: { upperOptimizer: { lr: 1e30 } } },
  ] as const;

  for (const { name, bilevel, options } of settings) {
    it(`${name}: stops with NonFiniteError naming the step and the checkpoint on disk, which resumes`, async () => {
      const dir = join(root, `nonfinite-${name.replace(/\W+/g, '-')}`);
      const fitOnce = async () => {
        const model = tinyModel();
        adapters.apply(model, {
          method: bilevel ? 'bidora' : 'dora',
          r: 2,
          targetModules: ['query', 'value'],
          modulesToSave: ['classifier'],
        });
        const common = { model, batchSize: 8, maxSteps: 40, log: 'none' as const };
        const trainer = bilevel
          ? new train.BiLevelTrainer({
              ...common,
              lowerOptimizer: { lr: 1e4 },
              upperOptimizer: { lr: 1e4 },
              ...(options as train.BiLevelTrainerOptions),
            })
          : new train.Trainer({ ...common, ...(options as train.TrainerOptions) });
        try {
          await trainer.fit(tinyExamples(64), { checkpointDir: dir, checkpointEvery: 3, resume: true });
          throw new Error('expected the run to go non-finite');
        } catch (error) {
          return error as train.NonFiniteError;
        } finally {
          trainer.dispose();
          model.dispose();
        }
      };
      const error = await fitOnce();
      expect(error).toBeInstanceOf(train.NonFiniteError);
      expect(error.message).toMatch(/^training stopped at step \d+: .+ is (NaN|-?Infinity); /);
      if (error.checkpoint === undefined) {
        expect(error.message).toMatch(/no checkpoint was written before it/);
        expect(existsSync(join(dir, train.CHECKPOINT_FILE))).toBe(false);
        return;
      }
      // The checkpoint named is the one on disk, holds the steps it says, and is finite throughout.
      expect(error.checkpoint.dir).toBe(dir);
      expect(error.checkpoint.step).toBeLessThan(error.step);
      expect(checkpointSteps(dir)).toBe(error.checkpoint.step);
      expect(error.message).toContain(`after step ${error.checkpoint.step}, is in ${dir}`);
      // It resumes: the same run from it goes non-finite at the same step again, naming the same checkpoint.
      const again = await fitOnce();
      expect(again).toBeInstanceOf(train.NonFiniteError);
      expect([again.step, again.figure, again.checkpoint]).toEqual([error.step, error.figure, error.checkpoint]);
    });
  }
});

describe('the step history', () => {
  it('lives in history.jsonl beside the checkpoint: the tensor header does not grow with the run', async () => {
    const headerBytes: number[] = [];
    for (const maxSteps of [4, 120]) {
      const dir = join(root, `history-${maxSteps}`);
      const model = tinyModel();
      adapters.apply(model, { method: 'lora', r: 2, targetModules: ['query'] });
      const trainer = new train.Trainer({ model, batchSize: 8, maxSteps, log: 'none' });
      const examples = tinyExamples(48);
      const result = await trainer.fit(examples.slice(0, 32), {
        evalExamples: examples.slice(32),
        evalEvery: 2,
        checkpointDir: dir,
        checkpointEvery: 2,
      });
      const path = join(dir, train.CHECKPOINT_FILE);
      headerBytes.push(Number(readFileSync(path).readBigUint64LE(0)));
      const lines = readFileSync(join(dir, train.HISTORY_FILE), 'utf8').trim().split('\n');
      expect(lines).toHaveLength(maxSteps + maxSteps / 2);
      expect(lines.map((line) => JSON.parse(line) as unknown)).toEqual(
        result.history.flatMap((record, index) =>
          index % 2 === 1 ? [{ step: record }, { eval: result.evals[(index - 1) / 2] }] : [{ step: record }],
        ),
      );
      trainer.dispose();
      model.dispose();
    }
    // The same header but for the digits of a few counters.
    expect(Math.abs(headerBytes[1] - headerBytes[0])).toBeLessThanOrEqual(64);
  });

  it('writeSafetensors refuses a header its reader would refuse, and leaves no file behind', () => {
    const path = join(root, 'huge-header.safetensors');
    const tensor = Tensor.from([1.5, -2.25]);
    expect(() => io.writeSafetensors(path, { tensor }, { notes: 'x'.repeat(100_000_000) })).toThrow(
      /writeSafetensors: the header .* would be \d+ bytes, above the 100000000-byte limit that readers enforce/,
    );
    expect(existsSync(path)).toBe(false);
    tensor.dispose();
  });

  it('refuses to resume from a history file cut short, naming it', async () => {
    const dir = join(root, 'history-cut');
    const run = async (resume: boolean) => {
      const model = tinyModel();
      adapters.apply(model, { method: 'lora', r: 2, targetModules: ['query'] });
      const trainer = new train.Trainer({ model, batchSize: 8, maxSteps: 6, log: 'none' });
      try {
        return await trainer.fit(tinyExamples(32), { checkpointDir: dir, checkpointEvery: 3, resume });
      } finally {
        trainer.dispose();
        model.dispose();
      }
    };
    await run(false);
    const history = join(dir, train.HISTORY_FILE);
    truncateSync(history, 10);
    await expect(run(true)).rejects.toThrow(/history\.jsonl has 10 bytes; the checkpoint beside it covers \d+/);
  });

  it('a run that does not resume starts anew in a folder that held another run', async () => {
    const dir = join(root, 'history-fresh');
    for (const maxSteps of [9, 3]) {
      const model = tinyModel();
      adapters.apply(model, { method: 'lora', r: 2, targetModules: ['query'] });
      const trainer = new train.Trainer({ model, batchSize: 8, maxSteps, log: 'none' });
      await trainer.fit(tinyExamples(32), { checkpointDir: dir, checkpointEvery: 3 });
      trainer.dispose();
      model.dispose();
    }
    expect(readFileSync(join(dir, train.HISTORY_FILE), 'utf8').trim().split('\n')).toHaveLength(3);
    expect(checkpointSteps(dir)).toBe(3);
  });
});

describe('cancelling and quiet by default', () => {
  it('an AbortSignal stops fit() after the step it was aborted in, with an AbortError and a checkpoint that resumes', async () => {
    const dir = join(root, 'aborted');
    const build = () => {
      const model = tinyModel();
      adapters.apply(model, { method: 'dora', r: 2, targetModules: ['query', 'value'], modulesToSave: ['classifier'] });
      return model;
    };
    const model = build();
    const controller = new AbortController();
    const steps: number[] = [];
    const trainer = new train.Trainer({
      model,
      batchSize: 8,
      maxSteps: 10,
      onStep: (record) => {
        steps.push(record.step);
        if (record.step === 2) controller.abort();
      },
    });
    const examples = tinyExamples(48);
    const fitOptions = { evalExamples: examples.slice(32), evalEvery: 5, checkpointDir: dir, checkpointEvery: 5 };
    await expect(trainer.fit(examples.slice(0, 32), { ...fitOptions, signal: controller.signal })).rejects.toThrow(
      expect.objectContaining({ name: 'AbortError' }),
    );
    expect(steps).toEqual([1, 2]);
    // The two steps done were checkpointed on the way out: the checkpoint loads and holds them.
    expect(checkpointSteps(dir)).toBe(2);
    trainer.dispose();
    model.dispose();

    // Resumed, the run ends as one never aborted.
    const finish = async (resume: boolean, folder: string) => {
      const fresh = build();
      const resumed = new train.Trainer({ model: fresh, batchSize: 8, maxSteps: 10 });
      const result = await resumed.fit(examples.slice(0, 32), { ...fitOptions, checkpointDir: folder, resume });
      const values = fresh
        .parameters()
        .filter((tensor) => tensor.requiresGrad)
        .map((tensor) => tensor.toFloat32Array());
      resumed.dispose();
      fresh.dispose();
      return { result, values };
    };
    const resumed = await finish(true, dir);
    const whole = await finish(false, join(root, 'not-aborted'));
    expect(resumed).toEqual(whole);
  });

  it('an already aborted signal rejects before any step; a signal that is not one is a TypeError', async () => {
    const model = tinyModel();
    adapters.apply(model, { method: 'lora', r: 2, targetModules: ['query'] });
    const trainer = new train.Trainer({ model, batchSize: 8, maxSteps: 3, onStep: () => expect.fail('no step') });
    await expect(trainer.fit(tinyExamples(16), { signal: AbortSignal.abort() })).rejects.toThrow(/aborted/);
    await expect(trainer.fit(tinyExamples(16), { signal: {} as AbortSignal })).rejects.toThrow(
      /fit: signal must be an AbortSignal/,
    );
    trainer.dispose();
    model.dispose();
  });

  it('fit() prints nothing without log options; a logger gets one record per step and evaluation, steps from 1', () => {
    // In a child process, so that anything written to stdout or stderr is seen.
    const script = `
      const { bidora, tinyModel, tinyExamples } = require(${JSON.stringify(join(__dirname, 'fixtures', 'tiny-task.cjs'))});
      const model = tinyModel();
      bidora.adapters.apply(model, { method: 'bidora', r: 2, targetModules: ['query'], modulesToSave: ['classifier'] });
      const examples = tinyExamples(40);
      const records = [];
      // The search alone: the records checked are its steps and evaluations, not the retraining phase's.
      const logged = new bidora.train.BiLevelTrainer({ model, batchSize: 8, maxSteps: 4, retrain: false, log: { info: (r) => records.push(r) } });
      const quiet = new bidora.train.BiLevelTrainer({ model, batchSize: 8, maxSteps: 4, retrain: false });
      (async () => {
        const result = await quiet.fit(examples.slice(0, 32), { evalExamples: examples.slice(32), evalEvery: 2 });
        await logged.fit(examples.slice(0, 32), { evalExamples: examples.slice(32), evalEvery: 2 });
        require('node:fs').writeFileSync(process.argv[1], JSON.stringify({ steps: result.history.map((r) => r.step), evals: result.evals.map((r) => r.step), records }));
      })();
    `;
    const out = join(root, 'quiet.json');
    const child = spawnSync(process.execPath, ['-e', script, out], { encoding: 'utf8' });
    expect([child.status, child.stdout, child.stderr]).toEqual([0, '', '']);
    const { steps, evals, records } = JSON.parse(readFileSync(out, 'utf8')) as {
      steps: number[];
      evals: number[];
      records: { step: number; totalSteps: number; loss?: number; evalLoss?: number }[];
    };
    expect(steps).toEqual([1, 2, 3, 4]);
    expect(evals).toEqual([2, 4]);
    expect(records.map((record) => [record.step, record.evalLoss === undefined ? 'step' : 'eval'])).toEqual([
      [1, 'step'],
      [2, 'step'],
      [2, 'eval'],
      [3, 'step'],
      [4, 'step'],
      [4, 'eval'],
    ]);
    expect(records.every((record) => record.totalSteps === 4)).toBe(true);
  });
});

describe('a refused resume', () => {
  it('leaves the model as it was when the checkpoint does not fit the run (a changed training set)', async () => {
    const dir = join(root, 'refused-resume');
    const build = () => {
      const model = tinyModel();
      adapters.apply(model, { method: 'dora', r: 2, targetModules: ['query'], modulesToSave: ['classifier'] });
      return model;
    };
    const first = build();
    const trainer = new train.Trainer({ model: first, batchSize: 8, maxSteps: 6 });
    await trainer.fit(tinyExamples(32), { checkpointDir: dir, checkpointEvery: 3 });
    trainer.dispose();
    first.dispose();
    const model = build();
    const before = model.parameters().map((tensor) => tensor.toFloat32Array());
    const resumed = new train.Trainer({ model, batchSize: 8, maxSteps: 6 });
    await expect(resumed.fit(tinyExamples(40), { checkpointDir: dir, resume: true })).rejects.toThrow(RangeError);
    expect(model.parameters().map((tensor) => tensor.toFloat32Array())).toEqual(before);
    resumed.dispose();
    model.dispose();
  });
});

describe('evaluation input, checked before training', () => {
  it('an empty or malformed evaluation set and an unknown metric are RangeErrors; -100 rows are left out', async () => {
    const model = tinyModel();
    adapters.apply(model, { method: 'lora', r: 2, targetModules: ['query'], modulesToSave: ['classifier'] });
    const steps: number[] = [];
    const trainer = new train.Trainer({
      model,
      batchSize: 8,
      maxSteps: 4,
      onStep: (record) => steps.push(record.step),
    });
    const examples = tinyExamples(40);
    await expect(trainer.fit(examples, { evalExamples: [] })).rejects.toThrow(/evalExamples must be a non-empty array/);
    await expect(trainer.fit(examples, { evalExamples: [{ inputIds: [2, 99, 3], label: 0 }] })).rejects.toThrow(
      /collate: example 0 inputIds\[1\] is 99/,
    );
    expect(steps).toEqual([]);
    const unknown = new train.Trainer({ model, batchSize: 8, maxSteps: 2, metric: 'f1' });
    await expect(unknown.fit(examples, { evalExamples: examples, evalEvery: 1 })).rejects.toThrow(
      /metric 'f1' is not one this task reports \(loss, accuracy, macroF1, mcc\)/,
    );
    // Ignored rows weigh nothing: the same accuracy and loss as without them.
    const withIgnored = [
      ...examples.slice(0, 8),
      ...examples.slice(0, 4).map((example) => ({ ...example, label: -100 })),
    ];
    const plain = train.evaluate(model, examples.slice(0, 8));
    const ignoring = train.evaluate(model, withIgnored);
    expect(ignoring.metrics).toEqual(plain.metrics);
    expect(ignoring.loss).toBeCloseTo(plain.loss, 6);
    for (const used of [trainer, unknown]) used.dispose();
    model.dispose();
  });
});
