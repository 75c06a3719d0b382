// Training checkpoints: every tensor of the training state and a JSON description of the rest, in one safetensors
// file replaced atomically, so a run killed while writing leaves the previous checkpoint intact.
import { existsSync } from 'node:fs';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { readSafetensors, writeSafetensors } from '../io/safetensors';
import { type Tensor } from '../tensor';

export const CHECKPOINT_FILE = 'checkpoint.safetensors';
const STATE_KEY = 'bidora_training_state';

export interface Checkpoint {
  tensors: Map<string, Tensor>;
  state: Record<string, unknown>;
}

export function saveCheckpoint(dir: string, checkpoint: Checkpoint): void {
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, CHECKPOINT_FILE), checkpoint.tensors, { [STATE_KEY]: JSON.stringify(checkpoint.state) });
}

/** The checkpoint in `dir`, or undefined when there is none yet. */
export function loadCheckpoint(dir: string): Checkpoint | undefined {
  const path = join(dir, CHECKPOINT_FILE);
  if (!existsSync(path)) return undefined;
  const { tensors, metadata } = readSafetensors(path);
  const text = metadata[STATE_KEY];
  if (text === undefined) {
    for (const tensor of tensors.values()) tensor.dispose();
    throw new Error(`${path}: not a bidora training checkpoint (no ${STATE_KEY} metadata)`);
  }
  return { tensors, state: JSON.parse(text) as Record<string, unknown> };
}
