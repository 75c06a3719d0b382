// Training checkpoints. A checkpoint folder holds two files:
// - checkpoint.safetensors: every tensor of the training state (trained tensors, optimizer state, the best
//   evaluation's weights) and a small JSON description of the rest, replaced atomically, so a run killed while
//   writing leaves the previous checkpoint intact;
// - history.jsonl: the step and evaluation records, one JSON value a line, only ever appended to. The checkpoint
//   says how many bytes of it are its own, so records appended for a checkpoint that never got published are cut off
//   on resume, and the tensor header stays small however long the run.
import { closeSync, existsSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { writeSync } from 'node:fs';
import { join } from 'node:path';

import { readSafetensors, writeSafetensors } from '../io/safetensors';
import { type Tensor } from '../tensor';

/** The checkpoint's file in a checkpoint folder: the training state's tensors, its JSON in the metadata. */
export const CHECKPOINT_FILE = 'checkpoint.safetensors';
/** The step and evaluation records of a checkpoint folder, one JSON value a line. */
export const HISTORY_FILE = 'history.jsonl';
const STATE_KEY = 'bidora_training_state';

/** A training checkpoint as written and read back: the tensors of the state and a JSON description of the rest. */
export interface Checkpoint {
  /** Trained tensors, optimizer state and best weights, by name; read back as float32 CPU tensors the caller owns. */
  tensors: Map<string, Tensor>;
  /** Steps, history length, best evaluation, optimizer hyperparameters, data and dropout stream positions. */
  state: Record<string, unknown>;
}

/**
 * Writes `checkpoint` to `dir` (created when missing) as CHECKPOINT_FILE, replacing the previous one atomically. The
 * tensors are written as they are: the caller still owns them. Throws the file system's error when it cannot write.
 */
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
  try {
    if (text === undefined)
      throw new RangeError(`${path}: not a bidora training checkpoint (no ${STATE_KEY} metadata)`);
    const state: unknown = JSON.parse(text);
    if (typeof state !== 'object' || state === null || Array.isArray(state)) {
      throw new RangeError(`${path}: the ${STATE_KEY} metadata is not a JSON object`);
    }
    return { tensors, state: state as Record<string, unknown> };
  } catch (error) {
    for (const tensor of tensors.values()) tensor.dispose();
    if (error instanceof SyntaxError) {
      throw new RangeError(`${path}: the ${STATE_KEY} metadata is not valid JSON (${error.message})`, { cause: error });
    }
    throw error;
  }
}

/** Removes a previous run's checkpoint and history from `dir` (a run that does not resume starts anew). */
export function removeCheckpoint(dir: string): void {
  for (const file of [CHECKPOINT_FILE, HISTORY_FILE]) rmSync(join(dir, file), { force: true });
}

/**
 * Cuts the history file in `dir` to its first `keepBytes` bytes (what the published checkpoint covers), appends one
 * line per entry and flushes it to disk. Returns the file's new length, for the checkpoint written next.
 */
export function appendHistory(dir: string, keepBytes: number, entries: readonly unknown[]): number {
  mkdirSync(dir, { recursive: true });
  const bytes = Buffer.from(entries.map((entry) => JSON.stringify(entry) + '\n').join(''), 'utf8');
  const fd = openSync(join(dir, HISTORY_FILE), 'a+');
  try {
    ftruncateSync(fd, keepBytes);
    for (let written = 0; written < bytes.length;) written += writeSync(fd, bytes, written, bytes.length - written);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return keepBytes + bytes.length;
}

/** The first `bytes` bytes of the history file in `dir`, parsed: the `lines` entries a checkpoint covers. */
export function readHistory(dir: string, bytes: number, lines: number): unknown[] {
  const path = join(dir, HISTORY_FILE);
  if (lines === 0) return [];
  if (!existsSync(path)) throw new RangeError(`${path} is missing: the checkpoint beside it needs ${lines} records`);
  const content = readFileSync(path);
  if (content.length < bytes) {
    throw new RangeError(`${path} has ${content.length} bytes; the checkpoint beside it covers ${bytes}`);
  }
  const text = content.subarray(0, bytes).toString('utf8');
  const rows = text.split('\n');
  if (rows.pop() !== '' || rows.length !== lines) {
    throw new RangeError(`${path}: its first ${bytes} bytes are not the ${lines} records the checkpoint covers`);
  }
  return rows.map((row, index) => {
    try {
      return JSON.parse(row) as unknown;
    } catch (error) {
      throw new RangeError(`${path}:${index + 1}: not valid JSON (${(error as Error).message})`, { cause: error });
    }
  });
}
