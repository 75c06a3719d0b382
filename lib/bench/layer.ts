// One adapted linear layer, forward + backward, four ways: LoRA, fused DoRA with the norm detached (PEFT's default),
// fused DoRA through the norm (BiDoRA's `detachNorm: false`), and a naive DoRA built from bidora's own ops the way
// PEFT computes it (B·A materialised, the full row norm of W0 + s·B·A). N tokens, K in-features, M out-features, r rank.
import { type Device } from '../binding';
import * as ops from '../ops/index';
import { type GradientRequest } from '../ops/index';
import { Tensor, tidy } from '../tensor';

/** The size of one benchmarked layer; every field a positive integer. */
export interface LayerShape {
  /** Tokens: rows of the input (batch × sequence). */
  n: number;
  /** In-features. */
  k: number;
  /** Out-features. */
  m: number;
  /** Adapter rank. */
  r: number;
}

/**
 * Whether the layer's input needs a gradient. Without it (a first layer, and how PEFT's benchmarks time a layer) the
 * fused kernels skip the input products; an inner layer pays for them.
 */
export interface LayerSetting {
  /** How tables and rows name the setting. */
  name: string;
  /** Whether the backward computes the input's gradient. */
  inputGradient: boolean;
}

/** Both settings, input as data first: what `benchLayers` times by default. */
export const LAYER_SETTINGS: readonly LayerSetting[] = [
  { name: 'input is data', inputGradient: false },
  { name: 'inner layer', inputGradient: true },
];

/**
 * A BERT-large-sized projection (1024) over 512 tokens, a LLaMA-7B-sized one (4096) over 256, and 2048 tokens through
 * a BERT-base-sized one (768): the shapes bench/README.md reports.
 */
export const DEFAULT_SHAPES: readonly LayerShape[] = [
  { n: 512, k: 1024, m: 1024, r: 8 },
  { n: 256, k: 4096, m: 4096, r: 16 },
  { n: 2048, k: 768, m: 768, r: 4 },
];

/** The variants timed, in table order (see this module's header for what each is). */
export const LAYER_VARIANTS = ['lora', 'dora', 'doraThroughNorm', 'naiveDora'] as const;
/** One of `LAYER_VARIANTS`. */
export type LayerVariant = (typeof LAYER_VARIANTS)[number];

/** What a variant reads; every tensor is made once per shape and device, from fixed seeds. */
export interface BenchLayer {
  /** The layer's input, [N, K]. */
  input: Tensor;
  /** The frozen base weight W0, [M, K]. */
  weight: Tensor;
  /** The base bias, [M]. */
  bias: Tensor;
  /** The adapter's down-projection A, [r, K]. */
  loraA: Tensor;
  /** The adapter's up-projection B, [M, r]. */
  loraB: Tensor;
  /** DoRA's per-output magnitudes, [M] (LoRA ignores them). */
  magnitude: Tensor;
  /** The adapter scale s (alpha / r). */
  scale: number;
  /** The gradient arriving at the output, [N, M]. */
  gradOutput: Tensor;
}

/** Throws a RangeError naming `name` unless `shape` holds four positive integers. */
export function checkShape(shape: LayerShape, name = 'shape'): void {
  for (const key of ['n', 'k', 'm', 'r'] as const) {
    const value = shape?.[key];
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(`${name}.${key} must be a positive integer, got ${String(value)}`);
    }
  }
}

/** Random weights scaled as in training (W0 and A by 1/√K, B small, magnitudes near 1), so no norm is degenerate. */
export function makeLayer(shape: LayerShape, device: Device = 'cpu'): BenchLayer {
  checkShape(shape);
  const { n, k, m, r } = shape;
  return tidy(() => ({
    input: Tensor.randn([n, k], { seed: 2, device }),
    weight: ops.scale(Tensor.randn([m, k], { seed: 1, device }), 1 / Math.sqrt(k)),
    bias: Tensor.randn([m], { seed: 3, device }),
    loraA: ops.scale(Tensor.randn([r, k], { seed: 4, device }), 1 / Math.sqrt(k)),
    loraB: ops.scale(Tensor.randn([m, r], { seed: 5, device }), 0.01),
    magnitude: Tensor.uniform([m], { seed: 6, low: 0.5, high: 1.5, device }),
    scale: 2,
    gradOutput: Tensor.randn([n, m], { seed: 7, device }),
  }));
}

/** Frees the tensors `makeLayer` made. */
export function disposeLayer(layer: BenchLayer): void {
  for (const value of Object.values(layer)) if (value instanceof Tensor) value.dispose();
}

/** The four variants on `layer` as functions of no arguments, each one forward + backward with its results freed. */
export function layerVariants(layer: BenchLayer, setting: LayerSetting): Record<LayerVariant, () => void> {
  // With the input as data only the adapter's own gradients are asked for, so the input products are skipped.
  const needs: GradientRequest | undefined = setting.inputGradient ? undefined : { input: false };
  return {
    lora: () => {
      tidy(() => {
        const { saved } = ops.loraForward(layer);
        ops.loraBackward(saved, layer.gradOutput, needs);
      });
    },
    dora: () => fusedDora(layer, true, needs),
    doraThroughNorm: () => fusedDora(layer, false, needs),
    naiveDora: () => naiveDora(layer, setting.inputGradient),
  };
}

function fusedDora(layer: BenchLayer, detachNorm: boolean, needs: GradientRequest | undefined): void {
  tidy(() => {
    const { saved } = ops.doraForward({ ...layer, detachNorm });
    ops.doraBackward(saved, layer.gradOutput, needs);
  });
}

/**
 * PEFT's DoRA from bidora ops: materialise B·A and V = W0 + s·B·A, take V's full row norms (detached, as PEFT does),
 * combine the base and low-rank products, then the backward those choices imply. What the fused kernels avoid is
 * the [M, K] buffers and the passes over them.
 */
function naiveDora(layer: BenchLayer, inputGradient: boolean): void {
  tidy(() => {
    const { input, weight, bias, loraA, loraB, magnitude, scale, gradOutput } = layer;
    const device = input.device;
    const loraWeight = ops.matmul(loraB, loraA);
    const direction = ops.add(weight, ops.scale(loraWeight, scale));
    // The norm leaves the graph here, as PEFT's `.detach()`: its reciprocal becomes a per-column gain.
    const norm = ops.sum(ops.mul(direction, direction), { axis: 1 }).toFloat32Array().map(Math.sqrt);
    const magnitudes = magnitude.toFloat32Array();
    const gain = Tensor.from(
      norm.map((value, index) => magnitudes[index] / value),
      undefined,
      { device },
    );
    const hidden = ops.matmul(input, loraA, { transposeB: true });
    const combined = ops.add(
      ops.linear(input, weight),
      ops.scale(ops.matmul(hidden, loraB, { transposeB: true }), scale),
    );
    ops.add(ops.mul(combined, gain), bias);

    const gradCombined = ops.mul(gradOutput, gain);
    // d magnitude = Σ_rows gradOutput ⊙ combined / norm; d bias = Σ_rows gradOutput.
    const dots = ops.sum(ops.mul(gradOutput, combined), { axis: 0 }).toFloat32Array();
    Tensor.from(
      dots.map((value, index) => value / norm[index]),
      undefined,
      { device },
    );
    ops.sum(gradOutput, { axis: 0 });
    const gradHidden = ops.scale(ops.matmul(gradCombined, loraB), scale);
    ops.scale(ops.matmul(gradCombined, hidden, { transposeA: true }), scale);
    ops.matmul(gradHidden, input, { transposeA: true });
    if (inputGradient) ops.add(ops.matmul(gradCombined, weight), ops.matmul(gradHidden, loraA));
  });
}
