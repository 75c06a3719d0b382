// Baselines measured in the same run as bidora: OpenBLAS's cblas_sgemm through a small C program, compiled here
// from bench/native/openblas_sgemm.c when Debian's libopenblas-dev is installed.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const source = new URL('./native/openblas_sgemm.c', import.meta.url).pathname;

let openblasBinary;

/** The compiled OpenBLAS timing program, or null (with the reason printed once) when it cannot be built. */
export function openblas() {
  if (openblasBinary !== undefined) return openblasBinary;
  const dir = join(tmpdir(), 'bidora-bench');
  mkdirSync(dir, { recursive: true });
  const binary = join(dir, 'openblas_sgemm');
  const built = spawnSync('gcc', ['-O2', source, '-o', binary, '-lopenblas'], { encoding: 'utf8' });
  if (built.status !== 0 || !existsSync(binary)) {
    console.log('OpenBLAS baseline skipped: `apt-get install libopenblas-dev` to compare against it');
    openblasBinary = null;
  } else {
    openblasBinary = binary;
  }
  return openblasBinary;
}

/**
 * Median seconds per cblas_sgemm call for C[m,n] = op(A) op(B), with OpenBLAS's SkylakeX kernels (Debian's build
 * misdetects this CPU otherwise) on `threads` threads.
 */
export function openblasSeconds({ m, n, k, transA, transB }, threads, repeats) {
  const binary = openblas();
  if (binary === null) return null;
  const output = execFileSync(binary, [m, n, k, transA ? 1 : 0, transB ? 1 : 0, repeats].map(String), {
    encoding: 'utf8',
    env: { ...process.env, OPENBLAS_CORETYPE: 'SkylakeX', OPENBLAS_NUM_THREADS: String(threads) },
  });
  return median(JSON.parse(output.trim().split('\n').at(-1)).seconds);
}

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}
