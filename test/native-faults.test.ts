// The native side under system limits and in plain synchronous loops, each in a child process: a thread pool the
// system will not fully grant, absurd thread counts, memory that must come back at dispose() without the event loop
// turning, and allocations that fail.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { setNumThreads } from '../lib/index';

const root = join(__dirname, '..');

/** Runs `script` with node under `sh -c` after each of `limits` (ulimit arguments), loading the package from dist/. */
function runLimited(limits: string[], script: string, env: Record<string, string> = {}) {
  const command = [...limits.map((limit) => `ulimit ${limit}`), `exec "${process.execPath}" -e "$SCRIPT"`].join(' && ');
  const result = spawnSync('sh', ['-c', command], {
    cwd: root,
    env: { ...process.env, ...env, SCRIPT: script },
    encoding: 'utf8',
  });
  return { status: result.status, signal: result.signal, stdout: result.stdout.trim(), stderr: result.stderr };
}

describe('the thread pool under system limits', () => {
  it('runs with the threads it got when the system refuses some, instead of aborting', () => {
    // 1,024 workers with 8 MiB stacks need 8 GiB of address space; 4 GiB leaves room for a few hundred.
    const script =
      "const b = require('bidora'); const i = b.buildInfo(); const t = b.Tensor.randn([256, 256], { seed: 1 });" +
      'const y = b.ops.matmul(t, t); console.log(JSON.stringify([i.poolThreads, i.poolThreadsRequested, y.size]))';
    const result = runLimited(['-s 8192', '-v 4000000'], script, { BIDORA_NUM_THREADS: '1024' });
    expect(result.signal, result.stderr).toBeNull();
    expect(result.status, result.stderr).toBe(0);
    const [poolThreads, requested, size] = JSON.parse(result.stdout) as number[];
    expect(requested).toBe(1024);
    expect(poolThreads).toBeGreaterThanOrEqual(1);
    expect(poolThreads).toBeLessThan(1024);
    expect(size).toBe(256 * 256);
  });

  it('refuses an absurd BIDORA_NUM_THREADS at load with a RangeError, and an absurd setNumThreads', () => {
    for (const value of ['1e9', '100000', '0']) {
      const result = runLimited(['-s 8192'], "try { require('bidora') } catch (e) { console.log(e.name, e.message) }", {
        BIDORA_NUM_THREADS: value,
      });
      expect(result.signal).toBeNull();
      expect(result.stdout).toMatch(/^RangeError BIDORA_NUM_THREADS: expected an integer from 1 to 1024/);
    }
    expect(() => setNumThreads(1e9)).toThrow(RangeError);
    expect(() => setNumThreads(1e9)).toThrow(/setNumThreads: threads must be an integer from 1 to 1048576/);
  });

  it('turns an allocation the system refuses into a RangeError', () => {
    const script =
      "const b = require('bidora'); try { b.Tensor.zeros([1e9]) } catch (e) { console.log(e.name, e.message) }";
    const result = runLimited(['-v 3000000'], script, { BIDORA_NUM_THREADS: '2' });
    expect(result.signal, result.stderr).toBeNull();
    expect(result.stdout).toBe('RangeError out of memory');
  });
});

describe('memory in plain synchronous loops', () => {
  it('dispose() hands everything native back at once: RSS stays flat without the event loop turning', () => {
    // --max-semi-space-size=1 keeps V8's young generation one size (its growth is not a leak but would hide one).
    const child = join(__dirname, 'fixtures', 'sync-loop-child.cjs');
    const result = spawnSync(process.execPath, ['--max-semi-space-size=1', child, '1000000', '3000'], {
      encoding: 'utf8',
    });
    expect(result.status, result.stderr).toBe(0);
    const { tensors, steps } = JSON.parse(result.stdout) as {
      tensors: { start: number; end: number };
      steps: { start: number; end: number; tensorsAtStart: number; tensorsAtEnd: number };
    };
    const megabytes = 2 ** 20;
    // Before the fix each created tensor held about 330 bytes until the loop ended: 1e6 of them, +330 MB.
    expect((tensors.end - tensors.start) / megabytes).toBeLessThan(50);
    expect(steps.tensorsAtEnd).toBe(steps.tensorsAtStart);
    expect((steps.end - steps.start) / megabytes).toBeLessThan(50);
  });
});
