// Reverse-mode differentiation over the ops' gradient rules: recording nodes, backward, noGrad and grad().
import { add, axpy, scale } from './ops/elementwise';
import { keep, share, storageVersion, type GradNode, Tensor, tidy } from './tensor';

let recording = true;

/** Runs `fn` without recording a graph: nothing it computes can be differentiated (evaluation, optimizer steps). */
export function noGrad<T>(fn: () => T): T {
  const previous = recording;
  recording = false;
  try {
    return fn();
  } finally {
    recording = previous;
  }
}

/** Whether ops record graph nodes now. */
export function isGradEnabled(): boolean {
  return recording;
}

/** The error for a tensor saved for backward and changed in place since: backward would read the new values. */
export function modifiedInPlace(op: string, name: string): TypeError {
  return new TypeError(
    `${op}: ${name} was modified in place after the forward pass that saved it, so its gradient would be wrong; ` +
      'change it after backward, or clone() it before changing it',
  );
}

/**
 * Saved values of one node: aliases over the inputs' storage, so users may dispose their tensors before backward.
 * Each records its storage version when saved, as PyTorch's saved-tensor version counter: backward refuses to run
 * on a value changed in place since (verify()), instead of computing a gradient from the new values.
 */
export class SavedTensors {
  #tensors: Tensor[] = [];
  #releasers: (() => void)[] = [];
  #watched: { alias: Tensor; version: number; name: string }[] = [];

  /** Keeps `tensor`'s values for backward; returns the alias to read them from. `name` names it in errors. */
  save(tensor: Tensor, name: string): Tensor {
    const alias = share(tensor);
    this.#tensors.push(alias);
    this.#watched.push({ alias, version: storageVersion(alias), name });
    return alias;
  }

  /** Takes ownership of a tensor made for backward (kept out of tidy scopes; nobody else can change it). */
  own<T extends Tensor | undefined>(tensor: T): T {
    if (tensor !== undefined) this.#tensors.push(keep(tensor));
    return tensor;
  }

  /** Runs `free` when the node is released (for state saved by other means, such as a fused op's saved object). */
  onRelease(free: () => void): void {
    this.#releasers.push(free);
  }

  /** Throws modifiedInPlace(op, name) for the first saved tensor whose storage changed since it was saved. */
  verify(op: string): void {
    for (const { alias, version, name } of this.#watched) {
      if (storageVersion(alias) !== version) throw modifiedInPlace(op, name);
    }
  }

  release(): void {
    for (const tensor of this.#tensors) tensor.dispose();
    this.#tensors = [];
    this.#watched = [];
    for (const free of this.#releasers) free();
    this.#releasers = [];
  }
}

/**
 * Records `output` as made by an op from `inputs` when a graph is being recorded and some input requires grad.
 * `makeBackward` is called only then, so ops save nothing when no gradient can flow; it receives the store to save
 * into and returns the gradient rule. `verify`, when given, checks state the op saved by other means.
 */
export function record(
  output: Tensor,
  op: string,
  inputs: readonly (Tensor | undefined)[],
  makeBackward: (saved: SavedTensors) => (gradOutput: Tensor, needs: readonly boolean[]) => (Tensor | undefined)[],
  verify?: () => void,
): Tensor {
  if (!recording || !inputs.some((input) => input?.requiresGrad)) return output;
  const saved = new SavedTensors();
  const rule = makeBackward(saved);
  const node: GradNode = {
    op,
    inputs,
    backward: rule,
    verify: () => {
      saved.verify(op);
      verify?.();
    },
    release: () => saved.release(),
  };
  output.gradNode = node;
  output.requiresGrad = true;
  return output;
}

/** What a node becomes once backward has freed it: a second backward through it is an error, as in PyTorch. */
const RELEASED: GradNode = {
  op: 'released',
  inputs: [],
  backward() {
    throw new TypeError('backward: the graph was already freed by a backward pass (pass retainGraph: true to keep it)');
  },
  // Nothing saved to check: backward() throws when a gradient reaches it.
  verify() {},
  release() {},
};

/**
 * Frees the graph nodes of `discarded` tensors that no tensor in `survivors` can reach: nobody can backpropagate
 * through them any more (a forward pass under tidy whose loss was not returned, an evaluation without noGrad).
 */
export function releaseOrphanedGraphs(discarded: readonly Tensor[], survivors: readonly Tensor[]): void {
  const orphans = discarded.filter((tensor) => tensor.gradNode !== undefined && tensor.gradNode !== RELEASED);
  if (orphans.length === 0) return;
  const reachable = new Set<GradNode>();
  const stack = survivors.map((tensor) => tensor.gradNode).filter((node) => node !== undefined);
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (reachable.has(node)) continue;
    reachable.add(node);
    for (const input of node.inputs) if (input?.gradNode !== undefined) stack.push(input.gradNode);
  }
  for (const tensor of orphans) {
    const node = tensor.gradNode!;
    if (reachable.has(node)) continue;
    node.release();
    tensor.gradNode = RELEASED;
  }
}

/** Whether `tensor` is differentiable: it requires grad (as a leaf or as the output of a recorded op). */
function differentiable(tensor: Tensor | undefined): tensor is Tensor {
  return tensor !== undefined && tensor.requiresGrad;
}

/** Tensors reachable from `root` through graph nodes, each after everything it depends on (inputs first). */
function topologicalOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const visited = new Set<Tensor>([root]);
  // Iterative depth-first search: deep graphs must not overflow the call stack.
  const stack: { tensor: Tensor; next: number }[] = [{ tensor: root, next: 0 }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const inputs = top.tensor.gradNode?.inputs ?? [];
    if (top.next < inputs.length) {
      const input = inputs[top.next++];
      if (differentiable(input) && !visited.has(input)) {
        visited.add(input);
        stack.push({ tensor: input, next: 0 });
      }
    } else {
      order.push(top.tensor);
      stack.pop();
    }
  }
  return order;
}

/** How `backward` and `grad` run a pass. */
export interface BackwardOptions {
  /** dL/d(root), of the root's shape; defaults to 1 for a scalar root (a RangeError for another root without it). */
  gradient?: Tensor;
  /** Only these leaves receive gradients (and only products leading to them are computed). */
  inputs?: readonly Tensor[];
  /** Keep the graph's saved values for another backward pass. */
  retainGraph?: boolean;
}

/**
 * Propagates gradients from `root` to the leaves; calls `deliver(leaf, gradient)` for each leaf gradient (a fresh
 * tensor the callee takes over). Intermediate gradients are freed as soon as their node has used them, and each
 * node's saved values right after its backward (unless `retainGraph`).
 */
function propagate(root: Tensor, options: BackwardOptions, deliver: (leaf: Tensor, gradient: Tensor) => void): void {
  if (!(root instanceof Tensor)) throw new TypeError('backward: the root must be a Tensor');
  if (!root.requiresGrad) {
    throw new TypeError('backward: the tensor does not require grad (no input of the ops that made it did)');
  }
  let seed = options.gradient;
  if (seed === undefined) {
    if (root.size !== 1) {
      throw new RangeError(`backward: a gradient is needed for a non-scalar root of shape [${root.shape.join(', ')}]`);
    }
    seed = Tensor.ones(root.shape, { device: root.device });
  } else if (!(seed instanceof Tensor) || seed.shape.join() !== root.shape.join()) {
    throw new RangeError(`backward: gradient must be a Tensor of the root's shape [${root.shape.join(', ')}]`);
  }
  const order = topologicalOrder(root);
  const targets = options.inputs === undefined ? undefined : new Set(options.inputs);
  // A tensor needs a gradient if it is a wanted leaf or some input of its node needs one.
  const needed = new Set<Tensor>();
  for (const tensor of order) {
    const node = tensor.gradNode;
    const wanted =
      node === undefined
        ? targets === undefined || targets.has(tensor)
        : node.inputs.some((input) => input !== undefined && needed.has(input));
    if (wanted) needed.add(tensor);
  }
  const ownsSeed = options.gradient === undefined;
  // Every node checks its saved values before any runs, so a refused backward has changed no .grad.
  try {
    for (const tensor of order) if (needed.has(tensor)) tensor.gradNode?.verify();
  } catch (error) {
    if (ownsSeed) seed.dispose();
    throw error;
  }
  const pending = new Map<Tensor, Tensor>([[root, seed]]);
  try {
    for (let index = order.length - 1; index >= 0; index--) {
      const tensor = order[index];
      const gradient = pending.get(tensor);
      if (gradient === undefined) continue;
      pending.delete(tensor);
      const node = tensor.gradNode;
      if (node === RELEASED) RELEASED.backward(gradient, []);
      if (node === undefined) {
        // A leaf receives a tensor it may keep: never the caller's own seed.
        if (needed.has(tensor)) deliver(tensor, gradient === seed && !ownsSeed ? scale(gradient, 1) : gradient);
        else if (gradient !== seed || ownsSeed) gradient.dispose();
        continue;
      }
      const needs = node.inputs.map((input) => input !== undefined && needed.has(input));
      // Each node's temporaries die with its own scope; only the input gradients it returns survive it.
      const inputGrads = needs.some(Boolean) ? tidy(() => node.backward(gradient, needs)) : [];
      if (gradient !== seed || ownsSeed) gradient.dispose();
      if (!options.retainGraph) {
        node.release();
        tensor.gradNode = RELEASED;
      }
      node.inputs.forEach((input, position) => {
        const inputGrad = inputGrads[position];
        if (inputGrad === undefined) return;
        if (input === undefined || !needs[position]) {
          inputGrad.dispose();
          return;
        }
        const earlier = pending.get(input);
        if (earlier === undefined) {
          pending.set(input, keep(inputGrad));
        } else {
          pending.set(input, keep(add(earlier, inputGrad)));
          earlier.dispose();
          inputGrad.dispose();
        }
      });
    }
  } finally {
    for (const leftover of pending.values()) if (leftover !== seed || ownsSeed) leftover.dispose();
  }
}

/** loss.backward(): accumulates (+=) into `.grad` of the leaves that require grad (or only of `options.inputs`). */
export function backward(root: Tensor, options: BackwardOptions = {}): void {
  noGrad(() =>
    tidy(() =>
      propagate(root, options, (leaf, gradient) => {
        if (leaf.grad === undefined || leaf.grad.isDisposed) {
          leaf.grad = keep(gradient);
        } else {
          axpy(leaf.grad, 1, gradient);
          gradient.dispose();
        }
      }),
    ),
  );
}

/**
 * The gradients of `root` with respect to `inputs`, as new tensors (zeros where no path leads), without touching
 * `.grad`: what a hypergradient needs. The graph is freed unless `retainGraph`.
 */
export function grad(
  root: Tensor,
  inputs: readonly Tensor[],
  options: { gradient?: Tensor; retainGraph?: boolean } = {},
): Tensor[] {
  if (!Array.isArray(inputs)) throw new TypeError('grad: inputs must be an array of Tensors');
  const results = new Map<Tensor, Tensor>();
  noGrad(() =>
    tidy(() =>
      propagate(root, { ...options, inputs }, (leaf, gradient) => {
        const earlier = results.get(leaf);
        results.set(leaf, keep(earlier === undefined ? gradient : add(earlier, gradient)));
        earlier?.dispose();
      }),
    ),
  );
  return inputs.map((input) => results.get(input) ?? Tensor.zeros(input.shape, { device: input.device }));
}
