// Activations with their gradients: GELU (erf form, as BERT, and tanh form, as GPT-2), SiLU, SwiGLU, ReLU, tanh; and
// the map from a checkpoint config's activation name to its op.
import { record } from '../autograd';
import { native, type NativeTensorHandle } from '../binding';
import { handleOf, type Tensor, tensorOf } from '../tensor';

type Handle = NativeTensorHandle;

/** An activation whose gradient reads its input x. */
function fromInput(
  fn: string,
  x: Tensor,
  forward: (x: Handle) => Handle,
  backward: (x: Handle, gradOutput: Handle) => Handle,
): Tensor {
  const output = tensorOf(forward(handleOf(x, fn, 'x')));
  return record(output, fn, [x], (saved) => {
    const input = saved.save(x, 'x');
    return (gradOutput) => [tensorOf(backward(handleOf(input, fn, 'x'), handleOf(gradOutput, fn, 'gradOutput')))];
  });
}

/** 0.5 · x · (1 + erf(x / √2)): BERT's `gelu`. */
export function gelu(x: Tensor): Tensor {
  return fromInput(
    'gelu',
    x,
    (input) => native.gelu({ x: input }),
    (input, gradOutput) => native.geluBackward({ x: input, gradOutput }),
  );
}

/**
 * 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))): GELU's tanh approximation, the activation transformers calls
 * `gelu_new` (GPT-2) and `gelu_pytorch_tanh` (PyTorch's `gelu(approximate='tanh')`).
 */
export function geluTanh(x: Tensor): Tensor {
  return fromInput(
    'geluTanh',
    x,
    (input) => native.geluTanh({ x: input }),
    (input, gradOutput) => native.geluTanhBackward({ x: input, gradOutput }),
  );
}

/** x · σ(x) (SiLU, swish): Llama's `silu`. */
export function silu(x: Tensor): Tensor {
  return fromInput(
    'silu',
    x,
    (input) => native.silu({ x: input }),
    (input, gradOutput) => native.siluBackward({ x: input, gradOutput }),
  );
}

/** max(x, 0). */
export function relu(x: Tensor): Tensor {
  return fromInput(
    'relu',
    x,
    (input) => native.relu({ x: input }),
    (input, gradOutput) => native.reluBackward({ x: input, gradOutput }),
  );
}

/** tanh(x); its gradient reads the output, 1 − y². */
export function tanh(x: Tensor): Tensor {
  const output = tensorOf(native.tanh({ x: handleOf(x, 'tanh', 'x') }));
  return record(output, 'tanh', [x], (saved) => {
    const result = saved.save(output, 'output');
    return (gradOutput) => [
      tensorOf(
        native.tanhBackward({
          output: handleOf(result, 'tanh', 'output'),
          gradOutput: handleOf(gradOutput, 'tanh', 'gradOutput'),
        }),
      ),
    ];
  });
}

/**
 * silu(gate) ⊙ up: Llama's MLP, `down_proj(act(gate_proj(x)) * up_proj(x))` with `act = silu`, in one op. gate and up
 * have one shape; both get gradients.
 */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  const fn = 'swiglu';
  const output = tensorOf(native.swiglu({ gate: handleOf(gate, fn, 'gate'), up: handleOf(up, fn, 'up') }));
  return record(output, fn, [gate, up], (saved) => {
    const gateInput = saved.save(gate, 'gate');
    const upInput = saved.save(up, 'up');
    return (gradOutput, [needGate, needUp]) => {
      const grads = native.swigluBackward({
        gate: handleOf(gateInput, fn, 'gate'),
        up: handleOf(upInput, fn, 'up'),
        gradOutput: handleOf(gradOutput, fn, 'gradOutput'),
      });
      // Unneeded gradients die with the node's backward scope.
      const gateGrad = tensorOf(grads.gate);
      const upGrad = tensorOf(grads.up);
      return [needGate ? gateGrad : undefined, needUp ? upGrad : undefined];
    };
  });
}

/** The activation names of transformers' configs (`hidden_act`, `activation_function`) that bidora runs. */
export const ACTIVATIONS = {
  /** The exact GELU, x·Φ(x) with the erf (BERT, RoBERTa, ESM). */
  gelu,
  /** GPT-2's name for the tanh approximation of GELU. */
  gelu_new: geluTanh,
  /** PyTorch's name for the same tanh approximation. */
  gelu_pytorch_tanh: geluTanh,
  /** x·sigmoid(x), the gate of Llama and Qwen2 feed-forward layers. */
  silu,
  /** Another name of SiLU. */
  swish: silu,
  /** max(x, 0). */
  relu,
  /** The hyperbolic tangent. */
  tanh,
} as const satisfies Record<string, (x: Tensor) => Tensor>;

/** A key of {@link ACTIVATIONS}: an activation name bidora runs. */
export type ActivationName = keyof typeof ACTIVATIONS;

/** The op for a config's activation name (`"gelu_new"` → geluTanh); RangeError naming the known ones otherwise. */
export function activationByName(name: string): (x: Tensor) => Tensor {
  if (!Object.hasOwn(ACTIVATIONS, name)) {
    throw new RangeError(
      `activationByName: unknown activation ${JSON.stringify(name)}; expected one of ${Object.keys(ACTIVATIONS).join(', ')}`,
    );
  }
  return ACTIVATIONS[name as ActivationName];
}
