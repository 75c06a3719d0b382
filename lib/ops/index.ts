// The op families, gathered under `ops`.
export {
  AdapterSaved,
  type AdapterGradients,
  DEFAULT_NORM_EPS,
  doraBackward,
  doraLinear,
  doraForward,
  doraMerge,
  doraUnmerge,
  doraWeightNorm,
  type DoraArgs,
  type GradientRequest,
  loraBackward,
  loraLinear,
  loraForward,
  loraMerge,
  loraUnmerge,
  type LoraArgs,
  reference,
  type WeightNormArgs,
} from './adapter';
export { add, axpy, mul, scale, sub } from './elementwise';
export { linear, matmul, type MatmulOptions } from './matmul';
export { globalNorm, mean, sum, sumToShape, type SumOptions } from './reduce';
export { concat, mergeHeads, narrow, permute0213, reshape, select, splitHeads, transpose2d } from './shape';
export {
  ACTIVATIONS,
  type ActivationName,
  activationByName,
  gelu,
  geluTanh,
  relu,
  silu,
  swiglu,
  tanh,
} from './activation';
export { type AttentionOptions, scaledDotProductAttention, softmax } from './attention';
export { dropout } from './dropout';
export { embedding } from './embedding';
export { bceWithLogits, crossEntropy, IGNORE_INDEX, mseLoss } from './loss';
export { rotary, type RotaryOptions } from './rotary';
export { layerNorm, rmsNorm } from './normalization';
export { axpyList, combineHypergradient, scaleList } from './multi';
export { orthogonalityPenalty, type OrthogonalityArgs, releaseWeightGram } from './regularizer';
