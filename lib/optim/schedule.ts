// Learning-rate schedules with the semantics of Hugging Face transformers' get_constant_schedule,
// get_linear_schedule_with_warmup and get_cosine_schedule_with_warmup (with min_lr: get_cosine_with_min_lr_...).

/**
 * A learning-rate schedule for `learningRateAt`, in optimizer updates. 'constant' keeps the base rate; 'linear' and
 * 'cosine' warm up linearly from 0, then decay to 0 (linear) or to `minLr` (cosine) at `totalSteps`.
 */
export type Schedule =
  | {
      /** The base learning rate at every step. */
      type: 'constant';
    }
  | {
      /** Linear decay to 0 after the warmup. */
      type: 'linear';
      /** Updates of linear warmup from 0, an integer ≥ 0; default 0. */
      warmupSteps?: number;
      /** The update at which the rate reaches 0, an integer ≥ 1. */
      totalSteps: number;
    }
  | {
      /** Half-cosine decay to `minLr` after the warmup. */
      type: 'cosine';
      /** Updates of linear warmup from 0, an integer ≥ 0; default 0. */
      warmupSteps?: number;
      /** The update at which the rate reaches `minLr`, an integer ≥ 1. */
      totalSteps: number;
      /** The floor of the decay, in [0, baseLr]; default 0. */
      minLr?: number;
    };

function stepCount(value: unknown, where: string, minimum: number): number {
  if (!Number.isSafeInteger(value) || (value as number) < minimum) {
    throw new RangeError(`${where} must be an integer of at least ${minimum}, got ${String(value)}`);
  }
  return value as number;
}

function nonNegative(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new RangeError(`${where} must be a finite number of at least 0, got ${String(value)}`);
  }
  return value;
}

/**
 * The learning rate of the update that follows `step` completed updates (0 for the first, as the LambdaLR of
 * transformers' Trainer): warmup rises linearly from 0 over `warmupSteps`, then 'linear' falls to 0 at `totalSteps`
 * and 'cosine' follows half a cosine from baseLr down to `minLr` (default 0) at `totalSteps`. Past `totalSteps`,
 * 'linear' stays at 0 and 'cosine' stays at minLr (transformers' cosine would rise again).
 */
export function learningRateAt(baseLr: number, schedule: Schedule, step: number): number {
  const fn = 'learningRateAt';
  nonNegative(baseLr, `${fn}: baseLr`);
  stepCount(step, `${fn}: step`, 0);
  if (schedule === null || typeof schedule !== 'object') throw new TypeError(`${fn}: schedule must be an object`);
  if (schedule.type === 'constant') return baseLr;
  if (schedule.type !== 'linear' && schedule.type !== 'cosine') {
    throw new RangeError(
      `${fn}: schedule.type must be 'constant', 'linear' or 'cosine', got ${String((schedule as { type: unknown }).type)}`,
    );
  }
  const totalSteps = stepCount(schedule.totalSteps, `${fn}: schedule.totalSteps`, 1);
  const warmupSteps = stepCount(schedule.warmupSteps ?? 0, `${fn}: schedule.warmupSteps`, 0);
  if (step < warmupSteps) return (baseLr * step) / Math.max(1, warmupSteps);
  const decaySteps = Math.max(1, totalSteps - warmupSteps);
  if (schedule.type === 'linear') return baseLr * Math.max(0, (totalSteps - step) / decaySteps);
  const minLr = nonNegative(schedule.minLr ?? 0, `${fn}: schedule.minLr`);
  if (minLr > baseLr) throw new RangeError(`${fn}: schedule.minLr (${minLr}) must not exceed baseLr (${baseLr})`);
  const progress = Math.min(1, (step - warmupSteps) / decaySteps);
  const factor = 0.5 * (1 + Math.cos(Math.PI * progress));
  return minLr + (baseLr - minLr) * factor;
}
