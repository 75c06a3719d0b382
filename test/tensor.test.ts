// Tensor creation, copies, disposal, tidy scopes, memory accounting and the finaliser.
import { constants, type PerformanceEntry, PerformanceObserver } from 'node:perf_hooks';

import { describe, expect, it } from 'vitest';

import { keep, memory, ops, resetPeakMemory, Tensor, tidy } from '../lib/index';

describe('Tensor creation', () => {
  it('copies a Float32Array or a number array in and out, with shape and size', () => {
    const source = new Float32Array([1.5, -2, 3.25, 4, 5, 6]);
    const tensor = Tensor.from(source, [2, 3]);
    source[0] = 100;
    expect(tensor.shape).toEqual([2, 3]);
    expect(tensor.size).toBe(6);
    expect(tensor.rank).toBe(2);
    const copy = tensor.toFloat32Array();
    expect(Array.from(copy)).toEqual([1.5, -2, 3.25, 4, 5, 6]);
    copy[1] = 7;
    expect(tensor.toFloat32Array()[1]).toBe(-2);
    tensor.dispose();
    const fromNumbers = Tensor.from([0.5, 0.25]);
    expect(Array.from(fromNumbers.toFloat32Array())).toEqual([0.5, 0.25]);
    fromNumbers.dispose();
  });

  it('respects the byteOffset of a Float32Array view', () => {
    const backing = new Float32Array([9, 9, 1, 2, 3, 9]);
    const view = backing.subarray(2, 5);
    const tensor = Tensor.from(view, [3]);
    expect(Array.from(tensor.toFloat32Array())).toEqual([1, 2, 3]);
    tensor.dispose();
  });

  it('makes zeros, ones, full and rank-0 to rank-4 tensors', () => {
    tidy(() => {
      expect(Array.from(Tensor.zeros([2, 2]).toFloat32Array())).toEqual([0, 0, 0, 0]);
      expect(Array.from(Tensor.ones([3]).toFloat32Array())).toEqual([1, 1, 1]);
      expect(Tensor.full([], 2.5).item()).toBe(2.5);
      expect(Tensor.zeros([2, 3, 4, 5]).size).toBe(120);
    });
  });

  it('randn is reproducible from its seed and close to N(mean, std²)', () => {
    tidy(() => {
      const first = Tensor.randn([100_001], { seed: 42 }).toFloat32Array();
      const second = Tensor.randn([100_001], { seed: 42 }).toFloat32Array();
      const other = Tensor.randn([100_001], { seed: 43 }).toFloat32Array();
      expect(second).toEqual(first);
      expect(other).not.toEqual(first);
      const mean = first.reduce((total, value) => total + value, 0) / first.length;
      const variance = first.reduce((total, value) => total + (value - mean) ** 2, 0) / first.length;
      expect(Math.abs(mean)).toBeLessThan(0.02);
      expect(Math.abs(variance - 1)).toBeLessThan(0.02);
      const shifted = Tensor.randn([10_000], { seed: 1, mean: 3, std: 0.5 }).toFloat32Array();
      expect(Math.abs(shifted.reduce((total, value) => total + value, 0) / 10_000 - 3)).toBeLessThan(0.03);
      const uniform = Tensor.uniform([10_000], { seed: 7, low: -2, high: 2 }).toFloat32Array();
      expect(Math.min(...uniform)).toBeGreaterThanOrEqual(-2);
      expect(Math.max(...uniform)).toBeLessThan(2);
    });
  });
});

describe('clone and detach', () => {
  it('clone copies into storage of its own; detach shares it; neither is in a graph', () => {
    const source = Tensor.randn([3, 4], { seed: 5 }).requireGrad();
    const original = source.toFloat32Array();
    const clone = source.clone();
    const view = source.detach();
    expect(clone.requiresGrad).toBe(false);
    expect(view.requiresGrad).toBe(false);
    expect(clone.shape).toEqual([3, 4]);
    expect(clone.device).toBe('cpu');
    const changed = Float32Array.from(original, (value) => value + 1);
    source.copyFrom(changed);
    expect(clone.toFloat32Array()).toEqual(original);
    expect(view.toFloat32Array()).toEqual(changed);
    for (const tensor of [source, clone, view]) tensor.dispose();
    expect(() => source.clone()).toThrow(/clone: tensor is a disposed Tensor/);
  });
});

describe('memory', () => {
  it('tidy disposes what fn created except what it returns, and memory() returns to its baseline', () => {
    const before = memory();
    const kept = tidy(() => {
      const a = Tensor.randn([64, 32], { seed: 1 });
      const b = Tensor.randn([32, 16], { seed: 2 });
      const product = ops.matmul(a, b);
      return { product, list: [ops.scale(product, 2)] };
    });
    expect(memory().tensors).toBe(before.tensors + 2);
    expect(kept.product.isDisposed).toBe(false);
    kept.product.dispose();
    kept.list[0].dispose();
    expect(memory().tensors).toBe(before.tensors);
    expect(memory().bytes).toBe(before.bytes);
  });

  it('nested scopes hand returned tensors to the outer scope; keep() opts out; errors still clean up', () => {
    const before = memory().tensors;
    let survivor: Tensor | undefined;
    tidy(() => {
      const inner = tidy(() => Tensor.ones([4]));
      expect(inner.isDisposed).toBe(false);
      survivor = keep(Tensor.zeros([4]));
    });
    expect(survivor?.isDisposed).toBe(false);
    survivor?.dispose();
    expect(() =>
      tidy(() => {
        Tensor.ones([8]);
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(memory().tensors).toBe(before);
  });

  it('tracks bytes and the peak since a reset', () => {
    resetPeakMemory();
    const base = memory();
    const big = Tensor.zeros([1000, 1000]);
    expect(memory().bytes - base.bytes).toBe(4_000_000);
    big.dispose();
    expect(memory().peakBytes - base.bytes).toBeGreaterThanOrEqual(4_000_000);
    resetPeakMemory();
    expect(memory().peakBytes).toBe(memory().bytes);
  });

  it('a disposed tensor throws a TypeError when used, and dispose is idempotent', () => {
    const tensor = Tensor.ones([2]);
    tensor.dispose();
    tensor.dispose();
    expect(tensor.isDisposed).toBe(true);
    expect(() => tensor.toFloat32Array()).toThrow(TypeError);
    expect(() => ops.scale(tensor, 2)).toThrow(/scale: a is a disposed Tensor/);
    expect(String(tensor)).toContain('disposed');
  });

  // V8 is told of native memory so that it collects tensors nobody disposed under pressure, but only of tensors that
  // outlive the task that made them (or once more than 512 MiB of them are live): a training step's activations,
  // freed by tidy, never start a collection, which would find nothing to free and slow the step.
  it('tensors freed within their task never start a collection; tensors nobody disposed are collected', async () => {
    const turns = async (count: number) => {
      for (let index = 0; index < count; index++) await new Promise((resolve) => setTimeout(resolve, 5));
    };
    let major = 0;
    const observer = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        const { detail } = entry as PerformanceEntry & { detail?: { kind?: number } };
        if (detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) major++;
      }
    });
    observer.observe({ entryTypes: ['gc'] });
    try {
      (globalThis as { gc?: () => void }).gc?.();
      await turns(2);
      major = 0;
      for (let task = 0; task < 10; task++) {
        // As a training step's activations: 256 MiB live at once, all freed before the task ends.
        const activations = Array.from({ length: 4 }, () => Tensor.zeros([16 << 20]));
        for (const tensor of activations) tensor.dispose();
        await turns(2);
      }
      // Told of each tensor as it was made, V8 ran one per task (10 here); one may come from elsewhere in the process.
      expect(major, 'major collections after tensors made and freed within their tasks').toBeLessThanOrEqual(1);
      // Nobody disposes these, and the loop never yields: past 512 MiB V8 is told at once, and collects them.
      const before = memory().tensors;
      (() => {
        for (let index = 0; index < 12; index++) Tensor.zeros([16 << 20]);
      })();
      expect(memory().tensors).toBe(before + 12);
      for (let attempt = 0; attempt < 200 && memory().tensors > before; attempt++) await turns(1);
      expect(memory().tensors).toBe(before);
      expect(major).toBeGreaterThan(0);
    } finally {
      observer.disconnect();
    }
  });

  it('the finaliser frees tensors nobody disposed once they are collected', async () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    expect(gc, 'run with --expose-gc').toBeTypeOf('function');
    const before = memory().tensors;
    (() => {
      for (let index = 0; index < 50; index++) Tensor.zeros([256]);
    })();
    expect(memory().tensors).toBe(before + 50);
    for (let attempt = 0; attempt < 20 && memory().tensors > before; attempt++) {
      gc?.();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(memory().tensors).toBe(before);
  });
});
