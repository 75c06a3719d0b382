// The op families, gathered under `ops`.
export { add, axpy, mul, scale, sub } from './elementwise';
export { linear, matmul, type MatmulOptions } from './matmul';
export { globalNorm, sum, type SumOptions } from './reduce';
