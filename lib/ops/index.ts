// The op families, gathered under `ops`.
export {
  AdapterSaved,
  type AdapterGradients,
  DEFAULT_NORM_EPS,
  doraBackward,
  doraForward,
  doraMerge,
  doraUnmerge,
  doraWeightNorm,
  type DoraArgs,
  type GradientRequest,
  loraBackward,
  loraForward,
  loraMerge,
  loraUnmerge,
  type LoraArgs,
  reference,
} from './adapter';
export { add, axpy, mul, scale, sub } from './elementwise';
export { linear, matmul, type MatmulOptions } from './matmul';
export { globalNorm, mean, sum, sumToShape, type SumOptions } from './reduce';
export { reshape } from './shape';
