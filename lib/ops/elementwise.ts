// Elementwise arithmetic with gradients: add, sub, mul (b may be a trailing-dims broadcast such as a bias), scale,
// and the in-place axpy.
import { isGradEnabled, record } from '../autograd';
import { native } from '../binding';
import { handleOf, type Tensor, tensorOf } from '../tensor';
import { sumToShape } from './reduce';

/** a + b; `b` has a's shape or a's trailing dims (then it repeats over the leading ones). */
export function add(a: Tensor, b: Tensor): Tensor {
  const output = tensorOf(native.add({ a: handleOf(a, 'add', 'a'), b: handleOf(b, 'add', 'b') }));
  const bShape = b.shape;
  return record(output, 'add', [a, b], () => (gradOutput, [needA, needB]) => [
    needA ? scale(gradOutput, 1) : undefined,
    needB ? sumToShape(gradOutput, bShape) : undefined,
  ]);
}

/** a − b, broadcasting as `add`. */
export function sub(a: Tensor, b: Tensor): Tensor {
  const output = tensorOf(native.sub({ a: handleOf(a, 'sub', 'a'), b: handleOf(b, 'sub', 'b') }));
  const bShape = b.shape;
  return record(output, 'sub', [a, b], () => (gradOutput, [needA, needB]) => [
    needA ? scale(gradOutput, 1) : undefined,
    needB ? scale(sumToShape(gradOutput, bShape), -1) : undefined,
  ]);
}

/** a ⊙ b, broadcasting as `add`. */
export function mul(a: Tensor, b: Tensor): Tensor {
  const output = tensorOf(native.mul({ a: handleOf(a, 'mul', 'a'), b: handleOf(b, 'mul', 'b') }));
  return record(output, 'mul', [a, b], (saved) => {
    const savedA = b.requiresGrad ? saved.save(a, 'a') : undefined;
    const savedB = a.requiresGrad ? saved.save(b, 'b') : undefined;
    const bShape = b.shape;
    return (gradOutput, [needA, needB]) => [
      needA ? mul(gradOutput, savedB!) : undefined,
      needB ? sumToShape(mul(gradOutput, savedA!), bShape) : undefined,
    ];
  });
}

/** alpha · a. */
export function scale(a: Tensor, alpha: number): Tensor {
  const output = tensorOf(native.scale({ a: handleOf(a, 'scale', 'a'), alpha }));
  return record(output, 'scale', [a], () => (gradOutput) => [scale(gradOutput, alpha)]);
}

/** y += alpha · x, in place (as BLAS axpy); returns y. Not differentiable: y must not be part of a recorded graph. */
export function axpy(y: Tensor, alpha: number, x: Tensor): Tensor {
  if (isGradEnabled() && (y.gradNode !== undefined || (y.requiresGrad && x.requiresGrad))) {
    throw new TypeError('axpy: an in-place update of a tensor in a recorded graph; run it inside noGrad()');
  }
  native.axpy({ y: handleOf(y, 'axpy', 'y'), alpha, x: handleOf(x, 'axpy', 'x') });
  return y;
}
