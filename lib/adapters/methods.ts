// The adapter methods as data. Each method names the layer kind that computes it and what it means elsewhere: its
// default for the norm's gradient, whether it trains bi-level, and how PEFT's adapter_config.json spells it. Each
// layer kind owns everything about one adapted layer's arithmetic: the tensors it trains and their names in PEFT's
// files, its initial magnitude, the fused kernels of its forward, and merging into and out of the base weight.
// A new method (rsLoRA's scale, PiSSA's initialisation, VeRA) adds an entry here and its kernels.
import { type AdapterLayerKind } from '../nn/layers';
import { doraLinear, doraMerge, doraUnmerge, doraWeightNorm, loraLinear, loraMerge, loraUnmerge } from '../ops/adapter';
import { type Tensor } from '../tensor';

export type { AdapterForwardArgs, AdapterLayerKind, AdapterState } from '../nn/layers';

const loraKind: AdapterLayerKind = {
  name: 'lora',
  hasMagnitude: false,
  peftTensors: { loraA: 'lora_A.weight', loraB: 'lora_B.weight' },
  initialMagnitude: () => undefined,
  forward: ({ magnitude: _magnitude, detachNorm: _detachNorm, ...args }) => loraLinear(args),
  merge: ({ weight, loraA, loraB, scale }) => ({ weight: loraMerge({ weight, loraA, loraB, scale }) }),
  unmerge: (merged, { loraA, loraB, scale }) => loraUnmerge({ merged, loraA, loraB, scale }),
};

const doraKind: AdapterLayerKind = {
  name: 'dora',
  hasMagnitude: true,
  peftTensors: { loraA: 'lora_A.weight', loraB: 'lora_B.weight', magnitude: 'lora_magnitude_vector' },
  initialMagnitude: ({ weight, loraA, loraB, scale }) => doraWeightNorm({ weight, loraA, loraB, scale }),
  forward: ({ magnitude, ...args }) => doraLinear({ ...args, magnitude: requireMagnitude(magnitude) }),
  merge: ({ weight, loraA, loraB, magnitude, scale }) => ({
    mergedNorm: doraWeightNorm({ weight, loraA, loraB, scale }),
    weight: doraMerge({ weight, loraA, loraB, magnitude: requireMagnitude(magnitude), scale }),
  }),
  unmerge: (merged, { loraA, loraB, magnitude, scale }, mergedNorm) => {
    if (mergedNorm === undefined) throw new TypeError('adapters.unmerge: a merged DoRA layer lost its norm');
    return doraUnmerge({ merged, loraA, loraB, magnitude: requireMagnitude(magnitude), norm: mergedNorm, scale });
  },
};

function requireMagnitude(magnitude: Tensor | undefined): Tensor {
  if (magnitude === undefined) throw new TypeError('a DoRA adapter needs its magnitude vector');
  return magnitude;
}

/** What a method means to apply, training and PEFT's files. */
export interface AdapterMethodSpec {
  /** The layer kind that computes it: its trained tensors, PEFT names, initial magnitude, kernels and merging. */
  readonly layer: AdapterLayerKind;
  /** The default of `detachNorm`: treat the row norm as a constant in backward (PEFT's DoRA) or not (BiDoRA). */
  readonly detachNorm: boolean;
  /** Trained by BiLevelTrainer: the direction on the lower split, the magnitudes on the upper. */
  readonly bilevel: boolean;
  /** PEFT's `use_dora` for this method (PEFT's own folders say no more than that). */
  readonly peftUseDora: boolean;
  /** One line for users: the formula and what sets the method apart. */
  readonly summary: string;
}

/**
 * A method name: 'lora' (W0 + s·B·A), 'dora' (PEFT's DoRA, the norm detached) or 'bidora' (DoRA with the norm
 * differentiated, trained bi-level by BiLevelTrainer).
 */
export type AdapterMethod = 'lora' | 'dora' | 'bidora';

/** Every adapter method by name, with what it means to apply, training and PEFT's files. */
export const ADAPTER_METHODS: Readonly<Record<AdapterMethod, AdapterMethodSpec>> = {
  lora: {
    layer: loraKind,
    detachNorm: true,
    bilevel: false,
    peftUseDora: false,
    summary: 'LoRA: W0 + s·B·A',
  },
  dora: {
    layer: doraKind,
    detachNorm: true,
    bilevel: false,
    peftUseDora: true,
    summary: "DoRA: m · (W0 + s·B·A) / ||W0 + s·B·A||, the norm detached in backward as PEFT's",
  },
  bidora: {
    layer: doraKind,
    detachNorm: false,
    bilevel: true,
    peftUseDora: true,
    summary: 'BiDoRA: DoRA with the norm differentiated, direction and magnitude trained on two splits',
  },
};

/** The method names, in the order they are listed to users. */
export const ADAPTER_METHOD_NAMES = Object.keys(ADAPTER_METHODS) as AdapterMethod[];

/** `value` as a method name, or a RangeError naming `where` and the methods there are. */
export function checkAdapterMethod(value: unknown, where: string): AdapterMethod {
  if (typeof value !== 'string' || !Object.hasOwn(ADAPTER_METHODS, value)) {
    throw new RangeError(
      `${where} must be one of ${ADAPTER_METHOD_NAMES.map((name) => `'${name}'`).join(', ')}, got ${JSON.stringify(value)}`,
    );
  }
  return value as AdapterMethod;
}
