// The addon is context-aware: several worker threads load it and multiply matrices at the same time.
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import { describe, expect, it } from 'vitest';

import { ops, tidy } from '../lib/index';
import { matmulReference, randomTensor, relativeError } from './helpers';

const addon = process.env.BIDORA_ADDON ?? join(__dirname, '..', 'build', 'Release', 'bidora.node');

function runWorker(seed: number): Promise<{ worst: number; live: number }> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(join(__dirname, 'fixtures', 'matmul-worker.cjs'), {
      workerData: { addon, size: 300, seed, rounds: 20 },
    });
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (code !== 0) reject(new Error(`worker exited with code ${code}`));
    });
  });
}

describe('worker threads', () => {
  it('two workers and the main thread multiply at the same time and all get the right answers', async () => {
    const workers = [runWorker(11), runWorker(12)];
    // Keep the main thread computing while the workers run, so the pool is contended.
    const mainErrors: number[] = [];
    for (let round = 0; round < 10; round++) {
      tidy(() => {
        const a = randomTensor([200, 150]);
        const b = randomTensor([150, 170]);
        const expected = matmulReference(a.toFloat32Array(), false, b.toFloat32Array(), false, 200, 170, 150);
        mainErrors.push(relativeError(ops.matmul(a, b).toFloat32Array(), expected));
      });
      await new Promise((resolve) => setImmediate(resolve));
    }
    const results = await Promise.all(workers);
    for (const result of results) {
      expect(result.worst).toBeLessThan(1e-5);
      expect(result.live).toBe(0);
    }
    expect(Math.max(...mainErrors)).toBeLessThan(1e-5);
  });
});
