// Devices: where tensors live and ops run. Without a GPU (this machine, CI) every tensor is on the CPU, asking for
// 'cuda' is a clear RangeError that leaks nothing, and the freed-buffer cache behind CPU tensors is checked. With a
// usable GPU the second block runs: round trips, each op family on 'cuda' against the CPU, mixed-device errors,
// a DoRA MLP and a BiDoRA tiny BERT trained on both devices.
import { describe, expect, it } from 'vitest';

import { native } from '../lib/binding';
import {
  adapters,
  devices,
  emptyCache,
  memory,
  models,
  nn,
  ops,
  optim,
  setCacheLimit,
  setMatmulPrecision,
  Tensor,
  tidy,
  train,
} from '../lib/index';
import { tinyBertConfig } from './fixtures/tiny-bert';

const hasGpu = devices().includes('cuda');

function maxRelativeDifference(actual: Float32Array, expected: Float32Array): number {
  let difference = 0;
  let scale = 0;
  expected.forEach((value, index) => {
    difference = Math.max(difference, Math.abs(actual[index] - value));
    scale = Math.max(scale, Math.abs(value));
  });
  return difference / scale;
}

describe('devices on the CPU', () => {
  it("devices() lists 'cpu' first and agrees with the addon", () => {
    expect(devices()[0]).toBe('cpu');
    expect(devices()).toEqual(native.devices());
  });

  it("every way of making a tensor puts it on 'cpu' by default or when asked", () => {
    const made = tidy(() =>
      [
        Tensor.from([1.5, -2], [2]),
        Tensor.zeros([2, 3]),
        Tensor.ones([3], { device: 'cpu' }),
        Tensor.full([1], 4.25, { device: 'cpu' }),
        Tensor.randn([2, 2], { seed: 3, device: 'cpu' }),
        Tensor.uniform([5], { seed: 4, device: 'cpu' }),
        ops.matmul(Tensor.randn([2, 3], { seed: 5 }), Tensor.randn([3, 4], { seed: 6 })),
      ].map((tensor) => tensor.device),
    );
    expect(made).toEqual(Array(7).fill('cpu'));
  });

  it('to() the device a tensor is on returns that tensor, as in PyTorch', () => {
    const tensor = Tensor.randn([3], { seed: 8 });
    expect(tensor.to('cpu')).toBe(tensor);
    tensor.dispose();
  });

  it("'cuda' without a usable GPU is a RangeError saying why, and leaks no tensor", () => {
    if (hasGpu) return;
    const before = memory().tensors;
    const tensor = Tensor.randn([4], { seed: 9 });
    const reason = /'cuda' is not available: (this build of bidora has no CUDA kernels|no GPU of compute capability)/;
    expect(() => tensor.to('cuda')).toThrow(RangeError);
    expect(() => tensor.to('cuda')).toThrow(reason);
    expect(() => Tensor.randn([2], { seed: 1, device: 'cuda' })).toThrow(/Tensor\.randn: device 'cuda' is not/);
    expect(() => Tensor.zeros([2], { device: 'cuda' })).toThrow(/Tensor\.zeros: device 'cuda' is not/);
    expect(() => Tensor.from([1, 2], [2], { device: 'cuda' })).toThrow(reason);
    tensor.dispose();
    expect(memory().tensors).toBe(before);
    expect(memory().deviceBytes).toBe(0);
  });

  it('a device that does not exist, or is not a string, names the argument', () => {
    const tensor = Tensor.randn([2], { seed: 2 });
    expect(() => tensor.to('tpu' as never)).toThrow(RangeError);
    expect(() => tensor.to('tpu' as never)).toThrow(/Tensor\.to: device must be 'cpu' or 'cuda', got 'tpu'/);
    expect(() => tensor.to(0 as never)).toThrow(TypeError);
    expect(() => tensor.to(0 as never)).toThrow(/to: device must be 'cpu' or 'cuda' \(or a dtype\), got number/);
    expect(() => Tensor.zeros([2], 'cuda' as never)).toThrow(/Tensor\.zeros: options must be an object/);
    tensor.dispose();
  });

  it('setMatmulPrecision keeps CPU products in float32 and rejects unknown settings', () => {
    const a = Tensor.randn([7, 33], { seed: 10 });
    const b = Tensor.randn([33, 5], { seed: 11 });
    const reference = tidy(() => ops.matmul(a, b).toFloat32Array());
    expect(setMatmulPrecision('medium')).toBe('highest');
    try {
      expect(tidy(() => ops.matmul(a, b).toFloat32Array())).toEqual(reference);
      expect(() => setMatmulPrecision('low' as never)).toThrow(/precision must be 'highest', 'high' or 'medium'/);
    } finally {
      expect(setMatmulPrecision('highest')).toBe('medium');
    }
    a.dispose();
    b.dispose();
  });

  it('Module.to and Module.device: a model on the CPU stays as it was', () => {
    const model = new nn.Linear(6, 4, { seed: 1 });
    const weight = model.weight;
    expect(model.device).toBe('cpu');
    expect(model.to('cpu')).toBe(model);
    expect(model.weight).toBe(weight);
    for (const parameter of model.parameters()) parameter.dispose();
  });
});

describe('the freed-buffer cache behind CPU tensors', () => {
  it('reuses a freed block for the next tensor of its size class and zeroes what must be zero', () => {
    emptyCache();
    expect(memory().cachedBytes).toBe(0);
    const shape = [256, 1024]; // 1 MiB: above the cache's lower bound
    const noise = Tensor.randn(shape, { seed: 12 });
    noise.dispose();
    const cached = memory().cachedBytes;
    expect(cached).toBeGreaterThanOrEqual(1 << 20);
    // A slightly smaller tensor falls in the same size class and takes the block; its zeros must be real zeros.
    const zeros = Tensor.zeros([256, 1000]);
    expect(memory().cachedBytes).toBe(cached - (1 << 20));
    expect(zeros.toFloat32Array().every((value) => value === 0)).toBe(true);
    const filled = Tensor.full([255, 1024], -3.5);
    expect(filled.toFloat32Array().every((value) => value === -3.5)).toBe(true);
    zeros.dispose();
    filled.dispose();
    expect(emptyCache()).toBeGreaterThanOrEqual(2 << 20);
    expect(memory().cachedBytes).toBe(0);
  });

  it('a limit bounds the cache, keeping the most recent blocks; 0 turns it off', () => {
    emptyCache();
    const MiB = 1 << 20;
    const previous = setCacheLimit(3 * MiB);
    try {
      expect(previous).toBe(1 << 30);
      // Three 1 MiB blocks fill it; a 1.25 MiB block then pushes out the two kept longest ago.
      const live = [0, 1, 2].map((seed) => Tensor.randn([256, 1024], { seed }));
      for (const tensor of live) tensor.dispose();
      expect(memory().cachedBytes).toBe(3 * MiB);
      Tensor.randn([320, 1024], { seed: 9 }).dispose();
      expect(memory().cachedBytes).toBe(MiB + 1.25 * MiB);
      const newest = Tensor.zeros([320, 1024]); // takes the 1.25 MiB block back
      expect(memory().cachedBytes).toBe(MiB);
      newest.dispose();
      // A lower limit frees down to it at once; 0 keeps nothing.
      expect(setCacheLimit(MiB)).toBe(3 * MiB);
      expect(memory().cachedBytes).toBeLessThanOrEqual(MiB);
      setCacheLimit(0);
      expect(memory().cachedBytes).toBe(0);
      Tensor.randn([256, 1024], { seed: 4 }).dispose();
      expect(memory().cachedBytes).toBe(0);
      expect(() => setCacheLimit(-1)).toThrow(/setCacheLimit: bytes must be an integer from 0/);
    } finally {
      setCacheLimit(previous);
    }
  });

  it('small tensors are left to the system allocator', () => {
    emptyCache();
    Tensor.randn([1000], { seed: 13 }).dispose();
    expect(memory().cachedBytes).toBe(0);
  });

  it('live bytes count only live tensors, whatever the cache holds', () => {
    const before = memory().bytes;
    const tensor = Tensor.randn([512, 512], { seed: 14 });
    expect(memory().bytes - before).toBe(512 * 512 * 4);
    tensor.dispose();
    expect(memory().bytes).toBe(before);
  });
});

describe.skipIf(!hasGpu)('devices with a GPU (skipped here: no usable CUDA GPU on this machine)', () => {
  const compare = (name: string, run: (device: 'cpu' | 'cuda') => Tensor | Tensor[], tolerance = 1e-5) => {
    it(`${name} on 'cuda' matches the CPU`, () => {
      const [onCpu, onGpu] = (['cpu', 'cuda'] as const).map((device) =>
        tidy(() =>
          [run(device)].flat().map((tensor) => {
            expect(tensor.device).toBe(device);
            return tensor.toFloat32Array();
          }),
        ),
      );
      onCpu.forEach((expected, index) => {
        expect(maxRelativeDifference(onGpu[index], expected), `${name} output ${index}`).toBeLessThan(tolerance);
      });
    });
  };
  const randn = (shape: number[], seed: number, device: 'cpu' | 'cuda') => Tensor.randn(shape, { seed, device });

  it('round trip: values survive cpu → cuda → cpu, and deviceBytes counts the GPU copy', () => {
    const host = Tensor.randn([37, 19], { seed: 20 });
    const before = memory().deviceBytes;
    const gpu = host.to('cuda');
    expect(gpu.device).toBe('cuda');
    expect(memory().deviceBytes - before).toBe(37 * 19 * 4);
    expect(gpu.toFloat32Array()).toEqual(host.toFloat32Array());
    expect(gpu.to('cpu').toFloat32Array()).toEqual(host.toFloat32Array());
    gpu.dispose();
    host.dispose();
    expect(memory().deviceBytes).toBe(before);
  });

  compare('matmul (all transposes, batched)', (d) => [
    ops.matmul(randn([65, 130], 1, d), randn([130, 33], 2, d)),
    ops.matmul(randn([130, 65], 3, d), randn([33, 130], 4, d), { transposeA: true, transposeB: true }),
    ops.matmul(randn([3, 17, 40], 5, d), randn([3, 40, 9], 6, d)),
  ]);
  compare('linear with bias', (d) => ops.linear(randn([2, 7, 48], 7, d), randn([24, 48], 8, d), randn([24], 9, d)));
  compare('add, sub, mul with a broadcast, scale', (d) => {
    const a = randn([9, 31], 10, d);
    const b = randn([31], 11, d);
    return [ops.add(a, b), ops.sub(a, b), ops.mul(a, b), ops.scale(a, -1.75)];
  });
  compare('gelu, layerNorm, softmax, crossEntropy, embedding', (d) => {
    const x = randn([6, 40], 12, d);
    const table = randn([30, 40], 13, d);
    return [
      ops.gelu(x),
      ops.layerNorm(x, randn([40], 14, d), randn([40], 15, d)),
      ops.softmax(x),
      ops.crossEntropy(x, Int32Array.from([1, 5, 39, 0, 7, 12])),
      ops.embedding(table, Int32Array.from([3, 29, 0, 3])),
    ];
  });

  for (const detachNorm of [true, false]) {
    compare(`fused DoRA forward and backward (detachNorm: ${detachNorm})`, (d) => {
      const args = {
        input: randn([7, 130], 16, d),
        weight: randn([257, 130], 17, d),
        bias: randn([257], 18, d),
        loraA: randn([16, 130], 19, d),
        loraB: randn([257, 16], 20, d),
        magnitude: Tensor.uniform([257], { seed: 21, low: 0.5, high: 1.5, device: d }),
        scale: 2,
        detachNorm,
      };
      const { output, saved } = ops.doraForward(args);
      const grads = ops.doraBackward(saved, randn([7, 257], 22, d));
      return [output, grads.input, grads.loraA, grads.loraB, grads.magnitude, grads.bias].filter(
        (tensor): tensor is Tensor => tensor !== undefined,
      );
    });
  }

  // bfloat16 weights: BF16 tensor cores on the GPU, vdpbf16ps or widened weights on the CPU; both round or keep the
  // activations within bfloat16's 2^-8, so the two devices agree to about that.
  compare(
    'bfloat16 weights: linear, matmul, embedding, fused DoRA forward and backward',
    (d) => {
      const weight = randn([257, 130], 17, d).to('bfloat16');
      const args = {
        input: randn([7, 130], 16, d),
        weight,
        loraA: randn([16, 130], 19, d),
        loraB: randn([257, 16], 20, d),
        magnitude: Tensor.uniform([257], { seed: 21, low: 0.5, high: 1.5, device: d }),
        scale: 2,
        detachNorm: false,
      };
      const { output, saved } = ops.doraForward(args);
      const grads = ops.doraBackward(saved, randn([7, 257], 22, d));
      return [
        ops.linear(randn([2, 7, 130], 7, d), weight, randn([257], 9, d)),
        ops.matmul(randn([5, 257], 8, d), weight),
        ops.embedding(weight, Int32Array.from([3, 256, 0, 3])),
        output,
        grads.input!,
        grads.loraA!,
        grads.loraB!,
        grads.magnitude!,
      ];
    },
    2e-2,
  );

  compare('DoRA merge and unmerge (through the CPU)', (d) => {
    const weight = randn([33, 20], 23, d);
    const args = {
      weight,
      loraA: randn([4, 20], 24, d),
      loraB: randn([33, 4], 25, d),
      magnitude: Tensor.uniform([33], { seed: 26, low: 0.5, high: 1.5, device: d }),
      scale: 0.5,
    };
    const merged = ops.doraMerge(args);
    const norm = ops.doraWeightNorm(args);
    return [merged, ops.doraUnmerge({ ...args, merged, norm })];
  });

  it('Module.to keeps tied parameters tied and carries gradients; optimizer state and PEFT loads follow the model', () => {
    const model = new nn.Sequential(new nn.Linear(6, 6, { seed: 1 }), new nn.Linear(6, 6, { seed: 2 }));
    const [first, second] = model.layers as nn.Linear[];
    first.weight.dispose();
    first.weight = second.weight; // tied, as input and output embeddings often are
    second.weight.requiresGrad = true;
    second.weight.grad = Tensor.randn([6, 6], { seed: 3 });
    model.to('cuda');
    expect(first.weight).toBe(second.weight);
    expect(second.weight.device).toBe('cuda');
    expect(second.weight.requiresGrad).toBe(true);
    expect(second.weight.grad?.device).toBe('cuda');

    const optimizer = new optim.AdamW([second.weight], { lr: 1e-2 });
    optimizer.step();
    const state = optimizer.stateDict();
    const onCpu = new Map([...state.tensors].map(([key, tensor]): [string, Tensor] => [key, tensor.to('cpu')]));
    const restored = new optim.AdamW([second.weight], { lr: 1e-2 });
    restored.loadStateDict({ ...state, tensors: onCpu });
    expect(() => restored.step()).not.toThrow();
    optimizer.dispose();
    restored.dispose();
  });

  it('SGD with Nesterov momentum and decay steps the same on cuda as on the CPU', () => {
    const [onCpu, onGpu] = (['cpu', 'cuda'] as const).map((device) => {
      const param = Tensor.randn([300, 7], { seed: 50, device }).requireGrad();
      const optimizer = new optim.SGD([param], { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 0.01 });
      for (let step = 0; step < 3; step += 1) {
        param.grad?.dispose();
        param.grad = Tensor.randn([300, 7], { seed: 60 + step, device });
        optimizer.step();
      }
      const values = param.toFloat32Array();
      optimizer.dispose();
      param.grad?.dispose();
      param.dispose();
      return values;
    });
    expect(maxRelativeDifference(onGpu, onCpu)).toBeLessThan(1e-5);
  });

  it('an op given tensors on two devices names both; a CPU-only op names the device', () => {
    const host = Tensor.randn([4, 4], { seed: 30 });
    const gpu = Tensor.randn([4, 4], { seed: 31, device: 'cuda' });
    expect(() => ops.matmul(host, gpu)).toThrow(TypeError);
    expect(() => ops.matmul(host, gpu)).toThrow(/matmul: a is on 'cpu' but b is on 'cuda'/);
    expect(() => ops.add(gpu, host)).toThrow(/add: a is on 'cuda' but b is on 'cpu'/);
    // The double-precision reference is CPU only: given a well-formed layer on 'cuda', it names the device.
    const onGpu = (shape: number[], seed: number) => Tensor.randn(shape, { seed, device: 'cuda' });
    const layer = { input: onGpu([2, 4], 32), weight: gpu, loraA: onGpu([2, 4], 33), loraB: onGpu([4, 2], 34) };
    const cpuOnly = () => ops.reference.forward({ ...layer, scale: 1 });
    expect(cpuOnly).toThrow(/is on 'cuda', but this op runs on the CPU only/);
    [layer.input, layer.loraA, layer.loraB].forEach((tensor) => tensor.dispose());
    host.dispose();
    gpu.dispose();
  });

  it('a DoRA MLP trains on cuda as on the CPU (same losses within float tolerance)', () => {
    const losses = (['cpu', 'cuda'] as const).map((device) => {
      const model = new nn.Sequential(
        new nn.Linear(12, 32, { seed: 1 }),
        new nn.GELU(),
        new nn.Linear(32, 3, { seed: 2 }),
      );
      model.to(device);
      adapters.apply(model, { method: 'dora', r: 2, alpha: 4, targetModules: ['0', '2'] }); // r ≤ min(in, out) = 3
      const optimizer = new optim.AdamW(
        model.parameters().filter((p) => p.requiresGrad),
        { lr: 1e-2 },
      );
      const input = Tensor.randn([16, 12], { seed: 40, device });
      const labels = Int32Array.from({ length: 16 }, (_, index) => index % 3);
      const trace: number[] = [];
      for (let step = 0; step < 5; step += 1) {
        tidy(() => {
          const loss = ops.crossEntropy(model.forward(input), labels);
          trace.push(loss.item());
          loss.backward();
        });
        optimizer.step();
        optimizer.zeroGrad();
      }
      return trace;
    });
    losses[0].forEach((loss, step) => expect(Math.abs(losses[1][step] - loss)).toBeLessThan(1e-4 * Math.abs(loss)));
  });

  it("a tiny BERT trained with BiDoRA on cuda ends with the CPU run's adapters (float tolerance)", () => {
    const examples = Array.from({ length: 16 }, (_, index) => ({
      inputIds: [2, ...Array.from({ length: 6 }, (__, position) => 5 + ((index * 7 + position * 3) % 30)), 3],
      label: index % 3,
    }));
    const trained = (['cpu', 'cuda'] as const).map((device) => {
      const model = models.fromConfig(tinyBertConfig(), { seed: 4 }).to(device);
      adapters.apply(model, {
        method: 'bidora',
        r: 4,
        targetModules: ['query', 'value'],
        modulesToSave: ['classifier'],
      });
      expect(model.device).toBe(device);
      const trainer = new train.BiLevelTrainer({ model, batchSize: 8, seed: 1, log: 'none' });
      for (let step = 0; step < 3; step += 1) trainer.step(examples.slice(0, 8), examples.slice(8), step);
      const values = model
        .parameters()
        .filter((tensor) => tensor.requiresGrad)
        .map((tensor) => tensor.toFloat32Array());
      trainer.dispose();
      model.dispose();
      return values;
    });
    trained[0].forEach((expected, index) => {
      expect(maxRelativeDifference(trained[1][index], expected), `trained tensor ${index}`).toBeLessThan(1e-3);
    });
  });
});
