// Data-parallel training over MPI: the world this process belongs to (from the launcher's environment), each rank's
// shard of a global batch, and the collectives the trainers call (native/mpi). A process not started by an MPI
// launcher, or started as a world of one, never initialises MPI and trains exactly as without this module.
import { native } from '../binding';
import { scaleList } from '../ops/multi';
import { handleOf, keep, Tensor } from '../tensor';
import { collateFor, type TrainableModel } from './model';
import { type Example } from './data';
import { IGNORE_INDEX } from '../ops/loss';

/** What {@link distributed} reports: this process's place in the run. */
export interface DistributedInfo {
  /** This process's rank, 0 to worldSize − 1; rank 0 writes checkpoints and reports progress. */
  rank: number;
  /** Processes training together; 1 outside an MPI launcher. */
  worldSize: number;
  /** 'mpi' when the processes exchange gradients through MPI; 'none' for a world of one. */
  backend: 'mpi' | 'none';
}

/** Options of {@link distributed}. */
export interface DistributedOptions {
  /**
   * Seconds any collective may wait for the other ranks before it fails with an error naming it (a rank that died,
   * hangs or was killed); default `BIDORA_DIST_TIMEOUT` or 300. It bounds the time between two ranks reaching the
   * same collective, so it must exceed the longest stretch of work one rank does alone (rank 0's checkpoints).
   */
  timeout?: number;
}

let world: DistributedInfo | undefined;
let timeoutSeconds: number | undefined;
let finalizeOnExit = false;

/** The launcher's rank and size: Open MPI's mpirun (OMPI_COMM_WORLD_*), MPICH's Hydra and Slurm (PMI_*). */
function launcherWorld(env: NodeJS.ProcessEnv): { rank: number; size: number } {
  const pairs: [string, string][] = [
    ['OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE'],
    ['PMI_RANK', 'PMI_SIZE'],
  ];
  for (const [rankName, sizeName] of pairs) {
    if (env[rankName] === undefined || env[sizeName] === undefined) continue;
    const rank = Number(env[rankName]);
    const size = Number(env[sizeName]);
    if (!Number.isInteger(rank) || !Number.isInteger(size) || size < 1 || rank < 0 || rank >= size) {
      throw new RangeError(
        `distributed: ${rankName}=${env[rankName]} and ${sizeName}=${env[sizeName]} are not a rank and a size`,
      );
    }
    return { rank, size };
  }
  return { rank: 0, size: 1 };
}

function defaultTimeout(): number {
  const text = process.env.BIDORA_DIST_TIMEOUT;
  if (text === undefined || text === '') return 300;
  const value = Number(text);
  if (!(value > 0) || !Number.isFinite(value)) {
    throw new RangeError(`BIDORA_DIST_TIMEOUT must be a positive number of seconds, got '${text}'`);
  }
  return value;
}

/**
 * This process's rank and the world's size. Under an MPI launcher (`mpirun -n 4 node train.js`) with more than one
 * process, the first call initialises MPI (the addon must have been built with it: `buildInfo().mpi`); otherwise the
 * world is this process alone and MPI is never touched. Trainers call it themselves; call it to set the timeout or to
 * let only rank 0 print. Throws an Error when the launcher started several processes but this build has no MPI (each
 * would silently train alone).
 */
export function distributed(options: DistributedOptions = {}): DistributedInfo {
  if (options.timeout !== undefined) {
    if (!(options.timeout > 0) || !Number.isFinite(options.timeout)) {
      throw new RangeError(`distributed: timeout must be a positive number of seconds, got ${options.timeout}`);
    }
    timeoutSeconds = options.timeout;
  }
  if (world !== undefined) return { ...world };
  const launcher = launcherWorld(process.env);
  if (launcher.size === 1) {
    world = { rank: 0, worldSize: 1, backend: 'none' };
  } else {
    if (!native.buildInfo().mpi) {
      throw new Error(
        `distributed: started as rank ${launcher.rank} of ${launcher.size} by an MPI launcher, but this build of ` +
          'bidora has no MPI: install Open MPI (libopenmpi-dev) and build from source, ' +
          'BIDORA_BUILD_FROM_SOURCE=1 npm rebuild bidora (docs/distributed.md)',
      );
    }
    const reported = keep(Tensor.zeros([2]));
    collective('init', [reported]);
    const [rank, worldSize] = reported.toFloat32Array();
    reported.dispose();
    if (rank !== launcher.rank || worldSize !== launcher.size) {
      throw new Error(
        `distributed: MPI says rank ${rank} of ${worldSize}, the launcher's environment rank ${launcher.rank} of ` +
          `${launcher.size}`,
      );
    }
    world = { rank, worldSize, backend: 'mpi' };
    if (!finalizeOnExit) {
      finalizeOnExit = true;
      // MPI wants every process that initialised it to finalize, but MPI_Finalize waits for the other ranks. After a
      // failure (a non-zero exit code; a failed collective, which the native side remembers) it is skipped, and the
      // launcher, seeing the abnormal exit, ends the other ranks at once instead of leaving them to their timeout.
      process.on('exit', (code) => {
        if (code === 0) collective('finalize');
      });
    }
  }
  return { ...world };
}

type Collective = 'init' | 'allreduceMean' | 'allreduceSum' | 'broadcast' | 'barrier' | 'finalize';

function collective(name: Collective, tensors: Tensor[] = []) {
  const handles = tensors.map((tensor, index) => handleOf(tensor, `distributed ${name}`, `tensors[${index}]`));
  native.mpi({ collective: name, tensors: handles, timeout: timeoutSeconds ?? defaultTimeout() });
}

/** Checks, in every world, that `tensors` is an array of live tensors (a TypeError naming the first that is not). */
function tensorList(name: string, tensors: Tensor[]): void {
  if (!Array.isArray(tensors)) throw new TypeError(`${name}: tensors must be an array of Tensors`);
  tensors.forEach((tensor, index) => handleOf(tensor, name, `tensors[${index}]`));
}

/** Each tensor replaced in place by its mean over the ranks (a no-op in a world of one). */
export function allreduceMean(tensors: Tensor[]): void {
  tensorList('allreduceMean', tensors);
  if (distributed().worldSize > 1) collective('allreduceMean', tensors);
}

/**
 * The sums over the ranks of `values` (exact for integers below 2^24 and for values every rank but one leaves at 0:
 * the float32 sum of one value and zeros is the value). Returns `values` itself in a world of one.
 */
export function sumOverRanks(values: Float32Array): Float32Array {
  const { worldSize } = distributed();
  if (worldSize === 1 || values.length === 0) return values;
  const tensor = keep(Tensor.from(values, [values.length]));
  try {
    collective('allreduceSum', [tensor]);
    return tensor.toFloat32Array();
  } finally {
    tensor.dispose();
  }
}

/** Every rank's `values` concatenated in rank order, on every rank (an all-gather of variable lengths). */
export function concatenateOverRanks(values: ArrayLike<number>): Float32Array {
  const { rank, worldSize } = distributed();
  if (worldSize === 1) return Float32Array.from(values);
  const lengths = new Float32Array(worldSize);
  lengths[rank] = values.length;
  const all = sumOverRanks(lengths);
  const offset = all.subarray(0, rank).reduce((total, length) => total + length, 0);
  const placed = new Float32Array(all.reduce((total, length) => total + length, 0));
  placed.set(Float32Array.from(values), offset);
  return sumOverRanks(placed);
}

/** Each tensor replaced in place by rank 0's (a no-op in a world of one). */
export function broadcastFromRoot(tensors: Tensor[]): void {
  tensorList('broadcastFromRoot', tensors);
  if (distributed().worldSize > 1) collective('broadcast', tensors);
}

/** Returns when every rank has called it (at once in a world of one). */
export function barrier(): void {
  if (distributed().worldSize > 1) collective('barrier');
}

/**
 * This rank's contiguous share of a global batch: sizes differ by at most one, the larger shares first, so rank 0's
 * is never empty. The concatenation over ranks is the batch in its order.
 */
export function shardOf<T>(items: readonly T[], rank: number, worldSize: number): T[] {
  const { begin, end } = shardRange(items.length, rank, worldSize);
  return items.slice(begin, end);
}

/** Where {@link shardOf}'s share of `length` items begins and ends. */
export function shardRange(length: number, rank: number, worldSize: number): { begin: number; end: number } {
  const base = Math.floor(length / worldSize);
  const extra = length % worldSize;
  const begin = rank * base + Math.min(rank, extra);
  return { begin, end: begin + base + (rank < extra ? 1 : 0) };
}

/**
 * What a model's loss averages over in `examples`: labelled tokens after the shift (causal LM), labelled tokens
 * (token classification), labelled rows (classification), rows (regression, multi-label). The global batch's mean is
 * the shards' means weighted by these counts.
 */
export function lossUnits(model: TrainableModel, examples: readonly Example[]): number {
  if (examples.length === 0) return 0;
  const { task } = model.config;
  const problemType = (model.config as { problemType?: string }).problemType;
  if (task === 'causal-lm') {
    const { labels, inputIds } = collateFor(model, examples);
    const seq = inputIds.shape[1];
    let count = 0;
    for (let index = 0; index < labels.length; index++)
      if (index % seq !== 0 && labels[index] !== IGNORE_INDEX) count++;
    return count;
  }
  if (task === 'token-classification') {
    const { labels } = collateFor(model, examples);
    let count = 0;
    for (const label of labels) if (label !== IGNORE_INDEX) count++;
    return count;
  }
  if (problemType === 'regression' || problemType === 'multi_label_classification') return examples.length;
  return examples.filter((example) => example.label !== IGNORE_INDEX).length;
}

/**
 * Runs `pass` on this rank's shard of the global batch `examples` and makes what it returns the global batch's:
 * `tensors` (gradients of the shard's mean loss, one per entry of `like`) become the gradient of the global mean, and
 * `figures` (`figureCount` of them: the shard's mean loss and the like) the global mean, by one all-reduce weighted by each shard's
 * {@link lossUnits}. A rank whose shard counts nothing contributes zeros (its `pass` does not run). In a world of one,
 * `pass` runs on the whole batch and nothing is exchanged. Returned tensors are the pass's own (reduced in place) or
 * fresh zeros, owned by the caller; in a world of one, what `pass` returned (a missing gradient stays missing).
 */
export function shardedPass(
  model: TrainableModel,
  examples: readonly Example[],
  like: readonly Tensor[],
  figureCount: number,
  pass: (shard: readonly Example[]) => { tensors: (Tensor | undefined)[]; figures: number[] },
): { tensors: (Tensor | undefined)[]; figures: number[] } {
  const { rank, worldSize } = distributed();
  if (worldSize === 1) return pass(examples);
  const shard = shardOf(examples, rank, worldSize);
  const units = lossUnits(model, shard);
  const total = lossUnits(model, examples);
  let result: { tensors: (Tensor | undefined)[]; figures: number[] } | undefined;
  if (units > 0) result = pass(shard);
  const tensors = like.map((tensor, index) => result?.tensors[index] ?? keep(Tensor.zeros(tensor.shape)));
  // Scaled so that the mean over ranks is the units-weighted mean: worldSize × units / total per rank.
  const factor = total > 0 ? (worldSize * units) / total : 0;
  const scalars = keep(
    Tensor.from(Float32Array.from({ length: figureCount + 1 }, (_, i) => (result?.figures[i] ?? 0) * factor)),
  );
  try {
    // One tensor may stand for several entries (a parameter's grad shared): reduced once.
    const distinct = [...new Set(tensors)];
    if (factor !== 1) scaleList(distinct, factor);
    allreduceMean([...distinct, scalars]);
    return { tensors, figures: Array.from(scalars.toFloat32Array().subarray(0, figureCount)) };
  } finally {
    scalars.dispose();
  }
}

/** Makes `grads[i]` the `.grad` of `parameters[i]` where it is a new tensor (zeros for a rank with nothing to count). */
export function adoptGradients(parameters: readonly Tensor[], grads: readonly (Tensor | undefined)[]): void {
  parameters.forEach((parameter, index) => {
    const gradient = grads[index];
    if (gradient === undefined || parameter.grad === gradient) return;
    parameter.grad?.dispose();
    parameter.grad = gradient;
  });
}
