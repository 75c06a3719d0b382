// Elementwise arithmetic: add, sub, mul (b may be a trailing-dims broadcast such as a bias), scale, axpy.
import { native } from '../binding';
import { handleOf, type Tensor, tensorOf } from '../tensor';

/** a + b; `b` has a's shape or a's trailing dims (then it repeats over the leading ones). */
export function add(a: Tensor, b: Tensor): Tensor {
  return tensorOf(native.add(handleOf(a, 'add', 'a'), handleOf(b, 'add', 'b')));
}

/** a − b, broadcasting as `add`. */
export function sub(a: Tensor, b: Tensor): Tensor {
  return tensorOf(native.sub(handleOf(a, 'sub', 'a'), handleOf(b, 'sub', 'b')));
}

/** a ⊙ b, broadcasting as `add`. */
export function mul(a: Tensor, b: Tensor): Tensor {
  return tensorOf(native.mul(handleOf(a, 'mul', 'a'), handleOf(b, 'mul', 'b')));
}

/** alpha · a. */
export function scale(a: Tensor, alpha: number): Tensor {
  return tensorOf(native.scale(handleOf(a, 'scale', 'a'), alpha));
}

/** y += alpha · x, in place (as BLAS axpy); returns y. */
export function axpy(y: Tensor, alpha: number, x: Tensor): Tensor {
  native.axpy(handleOf(y, 'axpy', 'y'), alpha, handleOf(x, 'axpy', 'x'));
  return y;
}
