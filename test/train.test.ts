// Trainers: the finite-difference hypergradient against an exact float64 mixed derivative, learning and
// determinism, resume after a kill mid-checkpoint, the event loop staying free, no leaks over 2,000 steps, a fit in a
// worker thread, and the faults and bad input that must stop training early.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import { afterAll, describe, expect, it } from 'vitest';

import { adapters, grad, models, ops, type Tensor, tidy, train } from '../lib/index';
import { layerBackward, layerForward, type LayerValues } from './adapter-reference';
import { randomTensor } from './helpers';
import { tinyExamples, tinyModel } from './fixtures/tiny-task';

const root = mkdtempSync(join(tmpdir(), 'bidora-train-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('the finite-difference hypergradient', () => {
  // A two-layer MLP with DoRA layers: y = L2(tanh(L1(x))), loss = mean (y − t)².
  const shapes = { n: 6, k: 5, hidden: 7, out: 3, r: 2, scale: 1.5 };
  const f64 = (tensor: Tensor) => Float64Array.from(tensor.toFloat32Array());

  for (const detachNorm of [true, false]) {
    it(`(g+ − g−)/(2ε) matches the exact mixed derivative ∂/∂m (∇θ L · v), detachNorm ${detachNorm}`, () => {
      tidy(() => {
        const { n, k, hidden, out, r, scale } = shapes;
        const input = randomTensor([n, k]);
        const target = randomTensor([n, out]);
        const weights = [ops.scale(randomTensor([hidden, k]), 0.5), ops.scale(randomTensor([out, hidden]), 0.5)];
        const biases = [randomTensor([hidden]), randomTensor([out])];
        const theta = [
          randomTensor([r, k]).requireGrad(),
          ops.scale(randomTensor([hidden, r]), 0.5).requireGrad(),
          randomTensor([r, hidden]).requireGrad(),
          ops.scale(randomTensor([out, r]), 0.5).requireGrad(),
        ];
        const magnitudes = [
          ops.add(ops.scale(randomTensor([hidden]), 0.1), ops.scale(randomTensor([hidden]), 0)).requireGrad(),
          ops.scale(randomTensor([out]), 0.2).requireGrad(),
        ];
        for (const m of magnitudes) m.copyFrom(m.toFloat32Array().map((value) => 1 + value));
        const loss = () => {
          const first = ops.doraLinear({
            input,
            weight: weights[0],
            bias: biases[0],
            loraA: theta[0],
            loraB: theta[1],
            magnitude: magnitudes[0],
            scale,
            detachNorm,
          });
          const second = ops.doraLinear({
            input: ops.tanh(first),
            weight: weights[1],
            bias: biases[1],
            loraA: theta[2],
            loraB: theta[3],
            magnitude: magnitudes[1],
            scale,
            detachNorm,
          });
          return ops.mseLoss(second, target);
        };
        const direction = theta.map((tensor) => randomTensor([...tensor.shape]));
        const before = theta.map((tensor) => tensor.toFloat32Array());
        const result = train.finiteDifferenceTerm({
          magnitudeGradients: () => tidy(() => grad(loss(), magnitudes)),
          lowerParameters: theta,
          direction,
        })!;
        // θ' is back where it was, to rounding.
        theta.forEach((tensor, index) => {
          const now = tensor.toFloat32Array();
          now.forEach((value, position) => expect(Math.abs(value - before[index][position])).toBeLessThan(1e-6));
        });

        // The exact reference in float64: g(θ) = dL/dm from hand-derived gradients, differentiated along v by a central
        // difference with a tiny step (float64 keeps it exact to ~1e-9).
        const x = f64(input);
        const t = f64(target);
        const w = weights.map(f64);
        const b = biases.map(f64);
        const m = magnitudes.map(f64);
        const v = direction.map(f64);
        const magnitudeGradient = (params: Float64Array[]): Float64Array[] => {
          const first: LayerValues = {
            n,
            k,
            m: hidden,
            r,
            input: x,
            weight: w[0],
            bias: b[0],
            loraA: params[0],
            loraB: params[1],
            magnitude: m[0],
            scale,
            eps: 1e-6,
          };
          const h1 = layerForward(first).output;
          const a1 = h1.map(Math.tanh);
          const second: LayerValues = {
            n,
            k: hidden,
            m: out,
            r,
            input: a1,
            weight: w[1],
            bias: b[1],
            loraA: params[2],
            loraB: params[3],
            magnitude: m[1],
            scale,
            eps: 1e-6,
          };
          const y = layerForward(second).output;
          const gy = y.map((value, index) => (2 * (value - t[index])) / y.length);
          const g2 = layerBackward(second, gy, detachNorm);
          const gh1 = g2.input.map((value, index) => value * (1 - a1[index] ** 2));
          const g1 = layerBackward(first, gh1, detachNorm);
          return [g1.magnitude, g2.magnitude];
        };
        const thetaValues = theta.map(f64);
        const step = 1e-5;
        const at = (sign: number) =>
          magnitudeGradient(
            thetaValues.map((values, index) =>
              values.map((value, position) => value + sign * step * v[index][position]),
            ),
          );
        const plus = at(1);
        const minus = at(-1);
        // The float32 difference (g+ − g−) / 2ε carries the rounding of g± divided by ε: a term small beside the
        // gradients themselves cannot be closer than that. g± come out of two layers of float32 reductions, so their
        // rounding is taken as 64 ulps of max |g|; a wrong sign, factor or ε is off by a large part of the term.
        const gradientSize = Math.max(
          ...magnitudeGradient(thetaValues).flatMap((values) => Array.from(values, Math.abs)),
        );
        const roundingFloor = (64 * 2 ** -24 * gradientSize) / result.epsilon;
        result.term.forEach((term, index) => {
          const expected = plus[index].map((value, position) => (value - minus[index][position]) / (2 * step));
          const actual = term.toFloat32Array();
          const scaleOf = Math.max(...Array.from(expected, Math.abs));
          actual.forEach((value, position) => {
            expect(Math.abs(value - expected[position]), `m${index}[${position}]`).toBeLessThan(
              2e-3 * scaleOf + roundingFloor,
            );
          });
        });
      });
    });
  }

  it("'first-order' uses the direct gradient alone; 'finite-difference' adds a second-order term", () => {
    for (const hypergradient of ['first-order', 'finite-difference'] as const) {
      const model = tinyModel(3, 0);
      adapters.apply(model, {
        method: 'bidora',
        r: 2,
        targetModules: ['query', 'value'],
        modulesToSave: ['classifier'],
      });
      const trainer = new train.BiLevelTrainer({ model, batchSize: 8, seed: 1, hypergradient, log: 'none' });
      const examples = tinyExamples(16);
      const record = trainer.step(examples.slice(0, 8), examples.slice(8));
      expect(record.directNorm).toBeGreaterThan(0);
      if (hypergradient === 'first-order') expect(record.secondOrderNorm).toBe(0);
      else expect(record.secondOrderNorm).toBeGreaterThan(0);
      trainer.dispose();
      model.dispose();
    }
  });
});

function trainedValues(model: models.SequenceClassifier): Float32Array[] {
  return model
    .parameters()
    .filter((tensor) => tensor.requiresGrad)
    .map((tensor) => tensor.toFloat32Array());
}

describe('BiLevelTrainer', () => {
  it('lowers the upper-split loss, and the same seed twice gives bit-identical adapters', async () => {
    const runs: Float32Array[][] = [];
    for (let run = 0; run < 2; run++) {
      const model = tinyModel();
      adapters.apply(model, {
        method: 'bidora',
        r: 2,
        targetModules: ['query', 'value'],
        modulesToSave: ['classifier'],
      });
      const trainer = new train.BiLevelTrainer({
        model,
        batchSize: 16,
        maxSteps: 120,
        seed: 4,
        lowerOptimizer: { lr: 1e-2 },
        upperOptimizer: { lr: 1e-2 },
        log: 'none',
      });
      const result = await trainer.fit(tinyExamples(160));
      const upper = result.history.map((record) => record.upperLoss as number);
      const early = upper.slice(0, 20).reduce((total, value) => total + value, 0) / 20;
      const late = upper.slice(-20).reduce((total, value) => total + value, 0) / 20;
      expect(late).toBeLessThan(early * 0.9);
      runs.push(trainedValues(model));
      trainer.dispose();
      model.dispose();
    }
    expect(runs[1]).toEqual(runs[0]);
  });

  it('retrains A, B and the head from where the search started them, with the searched magnitudes fixed', async () => {
    const model = tinyModel();
    adapters.apply(model, { method: 'bidora', r: 2, targetModules: ['query', 'value'], modulesToSave: ['classifier'] });
    const trainer = new train.BiLevelTrainer({
      model,
      batchSize: 16,
      maxSteps: 10,
      seed: 4,
      lowerOptimizer: { lr: 1e-2 },
      upperOptimizer: { lr: 1e-2 },
      // A retraining step at learning rate 0 leaves each tensor where the retraining put it before its first step.
      retrain: { maxSteps: 1, optimizer: { lr: 0 } },
      log: 'none',
    });
    const lowerAtStart = trainer.lowerParameters.map((tensor) => tensor.toFloat32Array());
    const magnitudesAtStart = trainer.magnitudes.map((tensor) => tensor.toFloat32Array());
    const result = await trainer.fit(tinyExamples(160));
    expect(result.steps).toBe(10);
    expect(result.retrain?.steps).toBe(1);
    expect(trainer.lowerParameters.map((tensor) => tensor.toFloat32Array())).toEqual(lowerAtStart);
    trainer.magnitudes.forEach((tensor, index) => {
      expect(tensor.toFloat32Array(), `magnitude ${index} searched`).not.toEqual(magnitudesAtStart[index]);
    });
    trainer.dispose();
    model.dispose();
  });

  it('refuses a model without adapters, a LoRA model, bad fractions and an empty upper split, before training', async () => {
    const plain = tinyModel();
    expect(() => new train.BiLevelTrainer({ model: plain })).toThrow(/no adapters/);
    adapters.apply(plain, { method: 'lora', r: 2, targetModules: ['query'] });
    expect(() => new train.BiLevelTrainer({ model: plain })).toThrow(/needs magnitudes/);
    const model = tinyModel();
    adapters.apply(model, { method: 'bidora', r: 2, targetModules: ['query'] });
    expect(() => new train.BiLevelTrainer({ model, upperFraction: 1 })).toThrow(/upperFraction must be in \(0, 1\)/);
    const before = trainedValues(model);
    await expect(
      new train.BiLevelTrainer({ model, upperFraction: 0.2, log: 'none' }).fit(tinyExamples(1)),
    ).rejects.toThrow(RangeError);
    expect(trainedValues(model)).toEqual(before);
    plain.dispose();
    model.dispose();
  });
});

describe('fit', () => {
  it('stops with a message naming the step when the loss stops being finite', async () => {
    const model = tinyModel();
    adapters.apply(model, { method: 'dora', r: 2, targetModules: ['query', 'value'], modulesToSave: ['classifier'] });
    const trainer = new train.Trainer({
      model,
      batchSize: 8,
      maxSteps: 50,
      optimizer: { lr: 1e30, type: 'sgd' },
      log: 'none',
    });
    await expect(trainer.fit(tinyExamples(32))).rejects.toThrow(
      /training stopped at step \d+: .+ is (NaN|-?Infinity); no checkpoint was written before it/,
    );
    trainer.dispose();
    model.dispose();
  });

  it('ends with the weights of the best evaluation, not the last step, unless restoreBest is false', async () => {
    const examples = tinyExamples(48);
    const finalLosses: Record<string, number> = {};
    for (const restoreBest of [true, false]) {
      const model = tinyModel(3, 0);
      adapters.apply(model, { method: 'dora', r: 2, targetModules: ['query', 'value'], modulesToSave: ['classifier'] });
      // A learning rate high enough that the evaluation loss does not fall at every step.
      const trainer = new train.Trainer({
        model,
        batchSize: 8,
        maxSteps: 12,
        metric: 'loss',
        restoreBest,
        optimizer: { lr: 0.3 },
        log: 'none',
      });
      const result = await trainer.fit(examples.slice(0, 32), { evalExamples: examples.slice(32), evalEvery: 1 });
      // The best evaluation must not be the last one, or this test could not tell the two apart.
      expect(result.best!.step).toBeLessThan(result.steps);
      finalLosses[String(restoreBest)] = train.evaluate(model, examples.slice(32)).loss;
      if (restoreBest) expect(finalLosses.true).toBe(result.best!.loss);
      else expect(finalLosses.false).toBe(result.evals.at(-1)!.loss);
      trainer.dispose();
      model.dispose();
    }
    expect(finalLosses.true).toBeLessThan(finalLosses.false);
  });

  it('keeps the event loop free: a timer sees p99 delay under 50 ms while fit() runs', async () => {
    const model = tinyModel();
    adapters.apply(model, { method: 'dora', r: 2, targetModules: ['query', 'value'], modulesToSave: ['classifier'] });
    const trainer = new train.Trainer({ model, batchSize: 8, maxSteps: 300, log: 'none' });
    const delays: number[] = [];
    let expected = performance.now() + 5;
    const timer = setInterval(() => {
      const now = performance.now();
      delays.push(now - expected);
      expected = now + 5;
    }, 5);
    await trainer.fit(tinyExamples(64), {});
    clearInterval(timer);
    trainer.dispose();
    model.dispose();
    delays.sort((a, b) => a - b);
    expect(delays.length).toBeGreaterThan(10);
    expect(delays[Math.floor(0.99 * (delays.length - 1))]).toBeLessThan(50);
  });

  it('leaks nothing over 2,000 steps: the live tensor count stays flat and RSS grows < 5% after warm-up', () => {
    const child = join(__dirname, 'fixtures', 'leak-child.cjs');
    const output = execFileSync(process.execPath, ['--expose-gc', '--max-semi-space-size=1', child], {
      encoding: 'utf8',
    });
    const { counts, rssAfterWarmup, rssAtEnd } = JSON.parse(output) as {
      counts: number[];
      rssAfterWarmup: number;
      rssAtEnd: number;
    };
    expect(counts).toHaveLength(10);
    expect(new Set(counts).size).toBe(1);
    expect(rssAtEnd).toBeLessThan(rssAfterWarmup * 1.05);
  });

  it('resumes after being killed while writing a checkpoint and ends with the same adapters as an uninterrupted run', () => {
    const child = join(__dirname, 'fixtures', 'resume-child.cjs');
    const whole = join(root, 'whole');
    execFileSync(process.execPath, [child, join(root, 'whole-ckpt'), whole]);
    const killedDir = join(root, 'killed-ckpt');
    const interrupted = spawnSync(process.execPath, [child, killedDir, join(root, 'never')], {
      env: { ...process.env, KILL_AT_CHECKPOINT: '3' },
    });
    expect(interrupted.signal).toBe('SIGKILL');
    const resumed = join(root, 'resumed');
    execFileSync(process.execPath, [child, killedDir, resumed]);
    expect(JSON.parse(readFileSync(resumed, 'utf8'))).toEqual(JSON.parse(readFileSync(whole, 'utf8')));
  });

  it('fitInWorker runs a fit on a managed worker: progress comes back, the adapter is saved, abort and errors arrive', () => {
    const child = join(__dirname, 'fixtures', 'managed-worker-child.cjs');
    const report = JSON.parse(execFileSync(process.execPath, [child, root], { encoding: 'utf8' })) as Record<
      string,
      unknown
    >;
    expect(report).toEqual({
      progress: [1, 2, 3, 'eval 3', 4, 5, 6, 'eval 6'],
      sameResult: true,
      sameWeights: true,
      // job.dtype 'bfloat16': the same figures as on this thread, and not the float32 run's.
      sameBfloat16Result: true,
      aborted: 'AbortError',
      // The abort reaches the worker a message later: a step or two may finish meanwhile, not the 1,000 asked for.
      abortedSteps: expect.toSatisfy((count: number) => count >= 3 && count <= 50),
      failed: expect.stringMatching(/^Error: models\.load: cannot read .*no-such-model/),
      nonFinite: expect.stringMatching(/loss|norm/),
      thrown: 'stop here',
    });
  });

  it('runs a whole fit in a worker thread', async () => {
    const result = await new Promise<{ steps: number; losses: number[] }>((resolve, reject) => {
      const worker = new Worker(join(__dirname, 'fixtures', 'fit-worker.cjs'));
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    expect(result.steps).toBe(40);
    expect(result.losses.every(Number.isFinite)).toBe(true);
  });
});
