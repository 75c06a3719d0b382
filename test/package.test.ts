// The package as users load it: require and import by name from the compiled dist/, with type declarations, and
// buildInfo() describing the build.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { buildInfo } from '../lib/index';

const root = join(__dirname, '..');
const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;

function node(args: string[]): string {
  return execFileSync(process.execPath, args, { cwd: root, encoding: 'utf8' }).trim();
}

describe('the package', () => {
  it('has compiled JavaScript and type declarations in dist/', () => {
    expect(existsSync(join(root, 'dist', 'index.js')), 'run `npm run build:ts`').toBe(true);
    expect(existsSync(join(root, 'dist', 'index.d.ts'))).toBe(true);
  });

  it("loads with require('bidora')", () => {
    const output = node(['-e', "const b = require('bidora'); const t = b.Tensor.ones([2, 3]); console.log(t.size)"]);
    expect(output).toBe('6');
  });

  it("loads with import { Tensor, ops } from 'bidora'", () => {
    const script =
      "import { Tensor, ops } from 'bidora'; const t = ops.scale(Tensor.ones([4]), 2); console.log(t.toFloat32Array().join(','))";
    expect(node(['--input-type=module', '-e', script])).toBe('2,2,2,2');
  });

  it('buildInfo reports the version, the ISA paths, the active one and the threads', () => {
    const info = buildInfo();
    expect(info.version).toBe(version);
    expect(info.isaCompiled).toContain('generic');
    expect(info.isaSupported).toContain('generic');
    expect(info.isaSupported).toContain(info.isa);
    expect(info.threads).toBeGreaterThanOrEqual(1);
    expect(info.poolThreads).toBeGreaterThanOrEqual(info.threads);
    expect(typeof info.cuda).toBe('boolean');
  });

  it('BIDORA_ISA and BIDORA_NUM_THREADS choose the path and the pool size; a bad value fails at load', () => {
    const script = "const i = require('bidora').buildInfo(); console.log(i.isa, i.poolThreads)";
    const env = { ...process.env, BIDORA_ISA: 'generic', BIDORA_NUM_THREADS: '3' };
    expect(execFileSync(process.execPath, ['-e', script], { cwd: root, env, encoding: 'utf8' }).trim()).toBe(
      'generic 3',
    );
    expect(() =>
      execFileSync(process.execPath, ['-e', "require('bidora')"], {
        cwd: root,
        env: { ...process.env, BIDORA_ISA: 'sse9' },
        stdio: 'pipe',
      }),
    ).toThrow(/BIDORA_ISA/);
  });
});
