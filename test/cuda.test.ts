// The CUDA backend as seen from here: the build switch (buildInfo().cuda), run-time device discovery (devices()),
// and the host test of the CUDA kernels' index and row math, which needs a CUDA build but no GPU.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { native } from '../lib/binding';
import { buildInfo } from '../lib/index';

const buildDir = join(__dirname, '..', 'build');

/** Whether the CMake build compiled the CUDA kernels (BIDORA_CUDA in its cache); a node-gyp build never does. */
function cmakeBuiltCuda(): boolean {
  const cache = join(buildDir, 'CMakeCache.txt');
  if (!existsSync(cache)) return false;
  return /^BIDORA_CUDA:BOOL=(ON|TRUE|1)$/im.test(readFileSync(cache, 'utf8'));
}

/** The host-test executable under build/, wherever the generator put it (Ninja: build/, multi-config: a subfolder). */
function findHostTest(dir: string, depth = 0): string | undefined {
  if (!existsSync(dir) || depth > 3) return undefined;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (name === 'bidora_cuda_host_test' && statSync(path).isFile()) return path;
    if (name !== 'CMakeFiles' && statSync(path).isDirectory()) {
      const found = findHostTest(path, depth + 1);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

const devices = native.devices();
const hasGpu = devices.includes('cuda');

describe('CUDA backend', () => {
  it('buildInfo().cuda says whether the CUDA kernels were compiled in', () => {
    expect(buildInfo().cuda).toBe(cmakeBuiltCuda());
  });

  it("devices() lists 'cpu' first, and 'cuda' only for a CUDA build", () => {
    expect(devices[0]).toBe('cpu');
    expect(devices.every((device) => device === 'cpu' || device === 'cuda')).toBe(true);
    expect(new Set(devices).size).toBe(devices.length);
    if (!buildInfo().cuda) expect(devices).toEqual(['cpu']);
    expect(native.devices()).toEqual(devices);
  });

  it('the host test of the CUDA kernel math passes (built with the CUDA kernels)', () => {
    const binary = findHostTest(buildDir);
    if (!cmakeBuiltCuda()) {
      expect(binary === undefined || !buildInfo().cuda).toBe(true);
      return;
    }
    expect(binary, 'bidora_cuda_host_test under build/').toBeDefined();
    const run = spawnSync(binary as string, { encoding: 'utf8', timeout: 60_000 });
    expect(run.status, `${run.stdout}${run.stderr}`).toBe(0);
    expect(run.stdout).toMatch(/all passed/);
  });

  it.skipIf(!hasGpu)('with a GPU: a CUDA build reports it (skipped here: no usable CUDA GPU on this machine)', () => {
    expect(buildInfo().cuda).toBe(true);
    expect(devices).toEqual(['cpu', 'cuda']);
  });
});
