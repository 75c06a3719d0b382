// The native side in plain synchronous loops, in a child process: memory must come back at dispose() without the
// event loop turning.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

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
