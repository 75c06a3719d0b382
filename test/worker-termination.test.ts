// A host may terminate a worker thread while it runs bidora (an abandoned fitInWorker, a pool shutting down): the
// worker must end and the host must live. Inside a terminating worker nothing can be thrown into JavaScript, and
// node-addon-api used to turn that failed throw into a C++ exception that ended the whole process.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

describe('worker termination', () => {
  it('terminating workers in the middle of ops, disposals and thrown errors leaves the host process alive', () => {
    const child = join(__dirname, 'fixtures', 'terminated-worker.cjs');
    const run = spawnSync(process.execPath, [child, '40'], { encoding: 'utf8', timeout: 120_000 });
    expect(run.stderr).not.toMatch(/terminate called/);
    expect(run.signal).toBeNull();
    expect(run.status).toBe(0);
    expect(run.stdout.trim()).toBe('survived 40');
  });
});
