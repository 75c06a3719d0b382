// The basic layers: Linear (optionally carrying a LoRA/DoRA adapter), Embedding, LayerNorm, RMSNorm, Dropout, activations,
// Sequential and MLP.
import { gelu, geluTanh, relu, silu, tanh } from '../ops/activation';
import { dropout } from '../ops/dropout';
import { embedding } from '../ops/embedding';
import { linear } from '../ops/matmul';
import { layerNorm, rmsNorm } from '../ops/normalization';
import { Tensor } from '../tensor';
import { SeedScope, SeedStream } from '../random';
import { Module } from './module';

/** How a layer's weights start. */
export interface InitOptions {
  /** Seed of the parameters' initial values. */
  seed?: number;
  /** Standard deviation of the normal initialisation (Hugging Face's initializer_range; default 0.02, BERT's). */
  std?: number;
}

/** The arguments every layer kind's forward takes (the fused op's, less what the adapter supplies itself). */
export interface AdapterForwardArgs {
  /** The input, [..., in] (any leading dimensions). */
  input: Tensor;
  /** The frozen base weight W0, [out, in]. */
  weight: Tensor;
  /** [out], or undefined for a layer without bias. */
  bias: Tensor | undefined;
  /** A, [r, in]. */
  loraA: Tensor;
  /** B, [out, r] (zeros at the start, so the adapted layer starts at the base layer). */
  loraB: Tensor;
  /** DoRA's m, [out]; undefined for LoRA. */
  magnitude: Tensor | undefined;
  /** s = alpha / r (alpha / sqrt(r) with rsLoRA). */
  scale: number;
  /** Dropout probability on the low-rank branch's input: 0 in eval mode. */
  dropout: number;
  /** Seed of this call's dropout mask (ignored when dropout is 0). */
  seed: number;
  /** Treat the row norm of W0 + s·B·A as a constant in backward (PEFT's DoRA) or differentiate it (BiDoRA). */
  detachNorm: boolean;
}

/** The trained tensors of one adapted layer and the base weight they adapt. */
export interface AdapterState {
  /** The base weight W0, [out, in]. */
  weight: Tensor;
  /** A, [r, in]. */
  loraA: Tensor;
  /** B, [out, r]. */
  loraB: Tensor;
  /** DoRA's m, [out]; undefined for LoRA. */
  magnitude: Tensor | undefined;
  /** s = alpha / r (alpha / sqrt(r) with rsLoRA). */
  scale: number;
}

/**
 * One adapted layer's arithmetic (LoRA, DoRA): the kinds themselves are data in adapters/methods.ts, so a layer runs
 * whichever it carries without knowing the methods.
 */
export interface AdapterLayerKind {
  /** 'lora', or 'dora' (which BiDoRA shares: the methods differ in training, not in the layer). */
  readonly name: 'lora' | 'dora';
  /** Whether the layer learns a magnitude per output row (DoRA's m). */
  readonly hasMagnitude: boolean;
  /** The trained tensors' suffixes in PEFT's adapter_model.safetensors, after the layer's dotted path. */
  readonly peftTensors: {
    /** A's suffix: `lora_A.weight`. */
    readonly loraA: string;
    /** B's suffix: `lora_B.weight`. */
    readonly loraB: string;
    /** m's suffix (`lora_magnitude_vector`), for kinds with a magnitude. */
    readonly magnitude?: string;
  };
  /** m at initialisation, so the adapted layer starts exactly at the base layer (undefined without a magnitude). */
  initialMagnitude(state: Omit<AdapterState, 'magnitude'>): Tensor | undefined;
  /** y for `input` through the fused kernel of this kind. */
  forward(args: AdapterForwardArgs): Tensor;
  /** The merged weight, and what unmerging will need besides the adapter's own tensors. */
  merge(state: AdapterState): {
    /** The merged weight, [out, in]: W0 + s·B·A, or m · (W0 + s·B·A) / ||W0 + s·B·A|| for DoRA. */
    weight: Tensor;
    /** DoRA: the row norms ||W0 + s·B·A||, [out], which unmerging divides back out. */
    mergedNorm?: Tensor;
  };
  /** W0 back from the merged weight (to rounding). */
  unmerge(merged: Tensor, state: Omit<AdapterState, 'weight'>, mergedNorm: Tensor | undefined): Tensor;
}

/**
 * A low-rank adapter carried by a Linear layer: W0 stays frozen, A [r, in] and B [out, r] train, and for DoRA the
 * magnitude m [out] too. `scale` is alpha / r (or alpha / sqrt(r) with rsLoRA).
 */
export class LinearAdapter extends Module {
  /** A, [r, in]: Kaiming-uniform or N(0, 1) at the start, as the config's `init` asks. */
  loraA: Tensor;
  /** B, [out, r]: zeros at the start. */
  loraB: Tensor;
  /** DoRA's magnitude m, [out]: the row norms of W0 at the start; undefined for LoRA. */
  magnitude: Tensor | undefined;

  constructor(
    /** The arithmetic of this layer (adapters/methods.ts): its forward kernels, merging, PEFT tensor names. */
    readonly layerKind: AdapterLayerKind,
    loraA: Tensor,
    loraB: Tensor,
    magnitude: Tensor | undefined,
    /** The layer's settings, as {@link adapters.apply} resolved them from the config. */
    readonly options: {
      /** s = alpha / r (alpha / sqrt(r) with rsLoRA). */
      scale: number;
      /** Dropout probability on the low-rank branch's input in train mode, in [0, 1). */
      dropout: number;
      /** Treat the row norm as a constant in backward (DoRA) or differentiate it (BiDoRA). */
      detachNorm: boolean;
      /** Seed of the dropout masks' stream. */
      seed: number;
    },
  ) {
    super();
    if (layerKind.hasMagnitude !== (magnitude !== undefined)) {
      throw new TypeError(
        `LinearAdapter: a ${layerKind.name} adapter ${layerKind.hasMagnitude ? 'needs' : 'has no'} a magnitude vector`,
      );
    }
    this.loraA = loraA;
    this.loraB = loraB;
    this.magnitude = magnitude;
    this.#seeds = new SeedStream(options.seed);
  }

  #seeds: SeedStream;
  /** While merged: the row norms of W0 + s·B·A from before merging (DoRA), which unmerging needs. */
  #mergedNorm: Tensor | undefined;

  /** While merged: DoRA's row norms from before merging, [out], which unmerging needs; undefined otherwise. */
  get mergedNorm(): Tensor | undefined {
    return this.#mergedNorm;
  }

  /** Set by merging and cleared by unmerging. */
  set mergedNorm(norm: Tensor | undefined) {
    this.#mergedNorm = norm;
  }
  /** Whether the adapter is folded into the base weight (forward then runs the plain product). */
  merged = false;

  /** The layer kind's name: 'lora' or 'dora' (a BiDoRA adapter is a 'dora' layer). */
  get kind(): AdapterLayerKind['name'] {
    return this.layerKind.name;
  }

  /** The seed of the next dropout mask on the low-rank branch. */
  nextSeed(): number {
    return this.#seeds.next();
  }

  protected override ownSeedStreams(): SeedStream[] {
    return [this.#seeds];
  }
}

/** y = x Wᵀ + b, W stored (out, in) as in PyTorch; with an adapter, the fused LoRA or DoRA layer. */
export class Linear extends Module {
  /** W, [out, in]: N(0, std²) at the start. */
  weight: Tensor;
  /** b, [out]: zeros at the start; undefined with `bias: false`. */
  bias: Tensor | undefined;
  /** The adapter {@link adapters.apply} attached, if any. */
  adapter: LinearAdapter | undefined;

  constructor(
    /** Input features: the last dimension of the input. */
    readonly inFeatures: number,
    /** Output features: the last dimension of the output. */
    readonly outFeatures: number,
    options: InitOptions & { bias?: boolean } = {},
  ) {
    super();
    this.weight = Tensor.randn([outFeatures, inFeatures], { seed: options.seed ?? 0, std: options.std ?? 0.02 });
    this.bias = options.bias === false ? undefined : Tensor.zeros([outFeatures]);
    this.weight.requiresGrad = true;
    if (this.bias) this.bias.requiresGrad = true;
  }

  /** [..., in] → [..., out]; through the adapter's fused kernel when one is attached and not merged. */
  forward(input: Tensor): Tensor {
    const adapter = this.adapter;
    if (adapter === undefined || adapter.merged) return linear(input, this.weight, this.bias);
    return adapter.layerKind.forward({
      input,
      weight: this.weight,
      bias: this.bias,
      loraA: adapter.loraA,
      loraB: adapter.loraB,
      magnitude: adapter.magnitude,
      scale: adapter.options.scale,
      dropout: this.training ? adapter.options.dropout : 0,
      seed: this.training && adapter.options.dropout > 0 ? adapter.nextSeed() : 0,
      detachNorm: adapter.options.detachNorm,
    });
  }
}

/** A lookup table: id i → row i of `weight`. */
export class Embedding extends Module {
  /** [numEmbeddings, dim]: N(0, std²) at the start. */
  weight: Tensor;

  constructor(
    /** Rows: ids must be in [0, numEmbeddings). */
    readonly numEmbeddings: number,
    /** The width of each embedding. */
    readonly dim: number,
    options: InitOptions = {},
  ) {
    super();
    this.weight = Tensor.randn([numEmbeddings, dim], { seed: options.seed ?? 0, std: options.std ?? 0.02 });
    this.weight.requiresGrad = true;
  }

  /** ids of shape `shape` → [...shape, dim]. */
  forward(ids: Int32Array, shape: readonly number[] = [ids.length]): Tensor {
    return embedding(this.weight, ids, shape);
  }
}

/** Layer normalisation over the last dimension, with a learned scale and shift. */
export class LayerNorm extends Module {
  /** The scale γ, [dim]: ones at the start. */
  weight: Tensor;
  /** The shift β, [dim]: zeros at the start. */
  bias: Tensor;

  constructor(
    /** The size of the last dimension, normalised over. */
    readonly dim: number,
    /** Added to the variance (default 1e-12, BERT's). */
    readonly eps = 1e-12,
  ) {
    super();
    this.weight = Tensor.ones([dim]).requireGrad();
    this.bias = Tensor.zeros([dim]).requireGrad();
  }

  /** [..., dim] → [..., dim]: (x − mean) / sqrt(var + eps) · weight + bias. */
  forward(input: Tensor): Tensor {
    return layerNorm(input, this.weight, this.bias, this.eps);
  }
}

/** Llama's RMSNorm: `weight` [dim] (ones at start) named as transformers names it, so checkpoints load by name. */
export class RMSNorm extends Module {
  /** The scale, [dim]. */
  weight: Tensor;

  constructor(
    /** The size of the last dimension, normalised over. */
    readonly dim: number,
    /** Added to the mean square (default 1e-6). */
    readonly eps = 1e-6,
  ) {
    super();
    this.weight = Tensor.ones([dim]).requireGrad();
  }

  /** [..., dim] → [..., dim]: x / sqrt(mean(x²) + eps) · weight. */
  forward(input: Tensor): Tensor {
    return rmsNorm(input, this.weight, this.eps);
  }
}

/** Drops entries with probability p in train mode; the identity in eval mode. */
export class Dropout extends Module {
  #seeds: SeedStream;

  /** `seed`: the first of the masks' seeds. Throws a RangeError when p is not in [0, 1). */
  constructor(
    /** The probability of dropping an entry, in [0, 1); kept entries are scaled by 1 / (1 − p). */
    readonly p: number,
    seed = 0,
  ) {
    super();
    if (!(p >= 0 && p < 1)) throw new RangeError(`Dropout: p must be in [0, 1), got ${p}`);
    this.#seeds = new SeedStream(seed);
  }

  /** A fresh mask each call in train mode; `input` itself in eval mode or with p = 0. */
  forward(input: Tensor): Tensor {
    const seed = this.nextSeed();
    return seed === undefined ? input : dropout(input, this.p, seed);
  }

  /**
   * The seed the next forward would use (the stream advances), or undefined when it would be the identity (eval mode
   * or p = 0): for ops that apply this dropout inside themselves, such as fused attention.
   */
  nextSeed(): number | undefined {
    return this.training && this.p > 0 ? this.#seeds.next() : undefined;
  }

  protected override ownSeedStreams(): SeedStream[] {
    return [this.#seeds];
  }
}

/** The exact GELU, x·Φ(x), as a layer. */
export class GELU extends Module {
  /** Elementwise; any shape. */
  forward(input: Tensor): Tensor {
    return gelu(input);
  }
}

/** GELU's tanh approximation (`gelu_new`, `gelu_pytorch_tanh`). */
export class GELUTanh extends Module {
  /** Elementwise; any shape. */
  forward(input: Tensor): Tensor {
    return geluTanh(input);
  }
}

/** SiLU, x·sigmoid(x), as a layer. */
export class SiLU extends Module {
  /** Elementwise; any shape. */
  forward(input: Tensor): Tensor {
    return silu(input);
  }
}

/** max(x, 0) as a layer. */
export class ReLU extends Module {
  /** Elementwise; any shape. */
  forward(input: Tensor): Tensor {
    return relu(input);
  }
}

/** tanh as a layer. */
export class Tanh extends Module {
  /** Elementwise; any shape. */
  forward(input: Tensor): Tensor {
    return tanh(input);
  }
}

/** A module with a one-tensor forward. */
export interface Layer extends Module {
  /** One tensor in, one out. */
  forward(input: Tensor): Tensor;
}

/** Layers applied in order; parameters named by position (`0.weight`, `1.weight`, ...). */
export class Sequential extends Module {
  /** The layers, in the order forward applies them. */
  layers: Layer[];

  constructor(...layers: Layer[]) {
    super();
    this.layers = layers;
  }

  override namedParameters(prefix = ''): [string, Tensor][] {
    return this.layers.flatMap((layer, index) =>
      layer.namedParameters(prefix === '' ? `${index}` : `${prefix}.${index}`),
    );
  }

  /** `input` through every layer in turn. */
  forward(input: Tensor): Tensor {
    return this.layers.reduce((value, layer) => layer.forward(value), input);
  }
}

/** Linear layers with an activation between them (and dropout after each activation when p > 0). */
export class MLP extends Sequential {
  constructor(
    sizes: readonly number[],
    options: InitOptions & { activation?: 'gelu' | 'relu' | 'tanh'; dropout?: number } = {},
  ) {
    const layers: Layer[] = [];
    // Each layer seeded by its parameter name (`layers.2.weight`), as models seed theirs.
    const seeds = new SeedScope(options.seed ?? 0, 'layers');
    for (let index = 0; index + 1 < sizes.length; index++) {
      const std = options.std;
      layers.push(new Linear(sizes[index], sizes[index + 1], { seed: seeds.seed(`${layers.length}.weight`), std }));
      if (index + 2 < sizes.length) {
        layers.push(
          options.activation === 'relu' ? new ReLU() : options.activation === 'tanh' ? new Tanh() : new GELU(),
        );
        if ((options.dropout ?? 0) > 0) {
          layers.push(new Dropout(options.dropout!, seeds.seed(String(layers.length))));
        }
      }
    }
    super(...layers);
  }
}
