// Atomic file writes: the bytes go to a temporary file beside the target, reach the disk, then replace it by rename.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as nodePath from 'node:path';

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
  const temporaryPath = temporaryPathBeside(path);
  // 'wx' fails rather than reuse a file that happens to have the temporary name.
  const fd = fs.openSync(temporaryPath, 'wx');
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
  }
  syncFolder(nodePath.dirname(path));
}

function temporaryPathBeside(path: string): string {
  // Keep the name well under the usual 255-byte limit whatever the target's name is.
  const base = nodePath.basename(path).slice(0, 100);
  const unique = `${process.pid}.${randomBytes(6).toString('hex')}`;
  return nodePath.join(nodePath.dirname(path), `.${base}.${unique}.tmp`);
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
