// The package as users load it: require and import by name from the compiled dist/, with type declarations,
// buildInfo() describing the build, and the loader's choice between a build made here and the shipped prebuilds.
// (scripts/pack-check.mjs checks the packed tarball itself, installed elsewhere; CI runs it.)
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { addonCandidates, addonFile, loadAddon, native } from '../lib/binding';
import { buildInfo } from '../lib/index';

const root = join(__dirname, '..');
const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;

function node(args: string[]): string {
  return execFileSync(process.execPath, args, { cwd: root, encoding: 'utf8' }).trim();
}

describe('the package', () => {
  it('has compiled JavaScript and type declarations in dist/, without @internal members', () => {
    expect(existsSync(join(root, 'dist', 'index.js')), 'run `npm run build:ts`').toBe(true);
    expect(existsSync(join(root, 'dist', 'index.d.ts'))).toBe(true);
    const tensorTypes = readFileSync(join(root, 'dist', 'tensor.d.ts'), 'utf8');
    expect(tensorTypes).toMatch(/class Tensor/);
    expect(tensorTypes).not.toMatch(/gradNode|@internal/);
  });

  it('ships a LICENSE matching package.json, and lists no tests or build tree in files', () => {
    const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
      license: string;
      files: string[];
      scripts: Record<string, string>;
    };
    expect(manifest.license).toBe('MIT');
    expect(readFileSync(join(root, 'LICENSE'), 'utf8')).toMatch(
      /^MIT License\n\nCopyright \(c\) 2026 the bidora authors/,
    );
    expect(manifest.files).toContain('prebuilds');
    expect(manifest.files.filter((entry) => /^(build|test|bench|scripts)\/?$/.test(entry))).toEqual([]);
    // npm runs a script named pre<name> before <name>: a "prebuild" script would run before every `npm run build`.
    expect(manifest.scripts).not.toHaveProperty('prebuild');
    expect(manifest.scripts.prepack).toMatch(/build:prebuilds/);
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

  it('buildInfo().addon names the file loaded: in a clone, the one compiled here', () => {
    expect(buildInfo().addon).toBe(addonFile);
    if (process.env.BIDORA_ADDON === undefined) {
      expect(addonFile).toBe(join(root, 'build', 'Release', 'bidora.node'));
    }
  });
});

describe('the addon loader', () => {
  const withoutOverride = <T>(body: () => T): T => {
    const saved = process.env.BIDORA_ADDON;
    delete process.env.BIDORA_ADDON;
    try {
      return body();
    } finally {
      if (saved !== undefined) process.env.BIDORA_ADDON = saved;
    }
  };

  it('tries a build made here, then the CUDA prebuild where a driver is, then the CPU prebuild', () => {
    const candidates = withoutOverride(() => addonCandidates('/pkg'));
    const prebuilds = `/pkg/prebuilds/${process.platform}-${process.arch}`;
    expect(candidates[0]).toEqual({ path: '/pkg/build/Release/bidora.node', origin: 'built here' });
    expect(candidates.at(-1)).toEqual({ path: `${prebuilds}/bidora.node`, origin: 'prebuilt' });
    const driver = existsSync('/proc/driver/nvidia/version') || existsSync('/dev/nvidiactl');
    expect(candidates.some((candidate) => candidate.path === `${prebuilds}/bidora-cuda.node`)).toBe(driver);
  });

  it('BIDORA_ADDON replaces the search', () => {
    const saved = process.env.BIDORA_ADDON;
    process.env.BIDORA_ADDON = '/somewhere/bidora.node';
    try {
      expect(addonCandidates('/pkg')).toEqual([{ path: '/somewhere/bidora.node', origin: 'BIDORA_ADDON' }]);
    } finally {
      if (saved === undefined) delete process.env.BIDORA_ADDON;
      else process.env.BIDORA_ADDON = saved;
    }
  });

  it('moves past a file the dynamic linker refuses, and names every failure when none loads', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bidora-loader-'));
    try {
      const broken = join(dir, 'broken.node');
      writeFileSync(broken, 'not a shared object');
      const loaded = loadAddon([
        { path: join(dir, 'absent.node'), origin: 'built here' },
        { path: broken, origin: 'prebuilt (CUDA)' },
        { path: addonFile, origin: 'prebuilt' },
      ]);
      expect(loaded.path).toBe(addonFile);
      expect(loaded.binding).toBe(native);
      expect(() => loadAddon([{ path: broken, origin: 'prebuilt' }])).toThrow(
        /cannot load the native addon .*broken\.node \(prebuilt\): .*npm rebuild bidora/,
      );
      expect(() => loadAddon([{ path: join(dir, 'absent.node'), origin: 'BIDORA_ADDON' }])).toThrow(
        /absent\.node \(BIDORA_ADDON\): no such file/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
