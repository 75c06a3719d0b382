// Atomic file writes: the bytes go to a temporary file beside the target, reach the disk, then replace it by rename.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { threadId } from 'node:worker_threads';

/** Appends one chunk to the file being written. */
export type AppendChunk = (chunk: Uint8Array) => void;

/** `writeSync` takes at most 2^31 - 1 bytes per call; larger chunks go out in slices of this size. */
const MAX_WRITE_BYTES = 1 << 30;

/** Writes `data` (a string as UTF-8) to `path` so that readers see either the old file or the whole new one. */
export function writeFileAtomic(path: string, data: Uint8Array | string): void {
  if (typeof data !== 'string' && !(data instanceof Uint8Array)) {
    throw new TypeError(`writeFileAtomic: data must be a Uint8Array or a string, got ${typeof data}`);
  }
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  writeFileAtomicWith(path, (append) => append(bytes));
}

/**
 * Writes `path` from the chunks that `writeContents` passes to `append`, in order, without ever holding the whole
 * file in memory. Readers see either the old file or the complete new one: the chunks go to a temporary file in the
 * same folder (a rename within one file system is atomic), which is flushed to disk before it is renamed over `path`.
 * If `writeContents` or a write throws, the temporary file is removed and `path` is left as it was.
 */
export function writeFileAtomicWith(path: string, writeContents: (append: AppendChunk) => void): void {
  if (typeof path !== 'string' || path === '')
    throw new TypeError('writeFileAtomicWith: path must be a non-empty string');
  if (typeof writeContents !== 'function') throw new TypeError('writeFileAtomicWith: writeContents must be a function');
  removeStaleTemporaryFiles(nodePath.dirname(path));
  const temporaryPath = temporaryPathBeside(path);
  // 'wx' fails rather than reuse a file that happens to have the temporary name.
  const fd = fs.openSync(temporaryPath, 'wx');
  liveTemporaryPaths.add(temporaryPath);
  let open = true;
  let renamed = false;
  try {
    writeContents((chunk) => {
      // A closed descriptor number may already belong to another file: refuse rather than write there.
      if (!open) throw new Error(`writeFileAtomicWith: append called after ${path} was written`);
      writeAll(fd, chunk);
    });
    fs.fsyncSync(fd);
    open = false;
    fs.closeSync(fd);
    fs.renameSync(temporaryPath, path);
    renamed = true;
  } finally {
    // Only reached open or unrenamed on the way out of an error: cleaning up must not hide that error.
    if (open) ignoreErrors(() => fs.closeSync(fd));
    if (!renamed) ignoreErrors(() => fs.rmSync(temporaryPath, { force: true }));
    liveTemporaryPaths.delete(temporaryPath);
  }
  syncFolder(nodePath.dirname(path));
}

function temporaryPathBeside(path: string): string {
  // Keep the name well under the usual 255-byte limit whatever the target's name is.
  const base = nodePath.basename(path).slice(0, 100);
  // The writer's process and thread: worker threads share the pid, and only the writer's own thread can tell
  // whether a file of its own is still being written.
  const unique = `${process.pid}-${threadId}.${randomBytes(6).toString('hex')}`;
  return nodePath.join(nodePath.dirname(path), `.${base}.${unique}.tmp`);
}

/** The temporary files this process is writing now (a write may start another in the same folder). */
const liveTemporaryPaths = new Set<string>();

/**
 * Names temporaryPathBeside makes: ".<name>.<pid>-<thread>.<12 hex digits>.tmp" (earlier versions wrote no thread);
 * nothing else is ever removed.
 */
const TEMPORARY_NAME = /^\..+\.(\d+)(?:-(\d+))?\.[0-9a-f]{12}\.tmp$/;

/**
 * Removes the temporary files a killed writer left in `folder` (a kill between open and rename leaves one behind).
 * Only names this module makes are touched, and only when no writer can still be using them: not one this thread is
 * writing, not one of another thread of this process, and not one whose process is alive (another process writing to
 * the same folder). A file of this pid and thread that this thread is not writing was left by an earlier process
 * that had the same pid (containers reuse them). Best effort.
 */
function removeStaleTemporaryFiles(folder: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(folder);
  } catch {
    return; // The write that follows reports a missing or unreadable folder itself.
  }
  for (const name of names) {
    const match = TEMPORARY_NAME.exec(name);
    if (match === null) continue;
    const path = nodePath.join(folder, name);
    if (liveTemporaryPaths.has(path)) continue;
    const pid = Number(match[1]);
    const thread = Number(match[2] ?? 0);
    // Another live process, or another thread of this one, may be writing it: leave it.
    if (pid === process.pid ? thread !== threadId : isProcessAlive(pid)) continue;
    ignoreErrors(() => fs.rmSync(path, { force: true }));
  }
}

function isProcessAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0); // signal 0 checks for existence without sending anything
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function writeAll(fd: number, chunk: Uint8Array): void {
  if (!(chunk instanceof Uint8Array)) throw new TypeError(`writeFileAtomicWith: chunks must be Uint8Arrays`);
  let written = 0;
  while (written < chunk.byteLength) {
    written += fs.writeSync(fd, chunk, written, Math.min(chunk.byteLength - written, MAX_WRITE_BYTES));
  }
}

/**
 * Flushes the folder entry so the rename itself survives a power cut. Best effort: some platforms (Windows) cannot
 * open a folder for syncing, and the new file is complete either way.
 */
function syncFolder(folder: string): void {
  ignoreErrors(() => {
    const fd = fs.openSync(folder, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  });
}

function ignoreErrors(action: () => void): void {
  try {
    action();
  } catch {
    // Deliberately ignored: see the callers.
  }
}
