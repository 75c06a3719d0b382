// Builds the addon: with CMake (cmake-js) when cmake is on the PATH, else with node-gyp; `--gyp` forces node-gyp.
// Neither downloads anything: Node-API headers come from the node-api-headers and node-addon-api packages, and
// node-gyp is pointed at the running Node's own install prefix for its build settings (common.gypi).
//
// `--install` (the package's install script) first tries the prebuilt addon shipped in prebuilds/ and compiles only
// when it does not load here, or when BIDORA_BUILD_FROM_SOURCE=1 (or npm's --build-from-source) asks for a compile.
// A clone always compiles, so that its tests run against its own sources and not a prebuild left from a pack.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (command, args) => spawnSync(command, args, { stdio: 'inherit', cwd: root });
const forceGyp = process.argv.includes('--gyp');

const truthy = (value) => value !== undefined && !['', '0', 'false', 'no'].includes(value.toLowerCase());
const fromSource =
  truthy(process.env.BIDORA_BUILD_FROM_SOURCE) || truthy(process.env.npm_config_build_from_source) || forceGyp;

/** Whether `file` loads in a fresh Node and reports its build: the same test the library's loader passes. */
function loads(file) {
  const env = { ...process.env };
  // The user's kernel knobs are checked at load; a typo there must not turn into a two-minute compile.
  delete env.BIDORA_ISA;
  delete env.BIDORA_NUM_THREADS;
  const check = spawnSync(
    process.execPath,
    ['-e', 'const info = require(process.argv[1]).buildInfo(); console.log(info.version, info.isa)', file],
    { env, encoding: 'utf8' },
  );
  if (check.status === 0) return { ok: true, info: check.stdout.trim() };
  return {
    ok: false,
    reason: (
      check.stderr
        .trim()
        .split('\n')
        .find((line) => /rror/.test(line)) ?? ''
    ).trim(),
  };
}

const installing = process.argv.includes('--install') && !existsSync(join(root, '.git'));
if (installing && !fromSource) {
  const prebuild = join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'bidora.node');
  if (existsSync(prebuild)) {
    const result = loads(prebuild);
    if (result.ok) {
      console.log(
        `bidora: using the prebuilt addon (${result.info}); set BIDORA_BUILD_FROM_SOURCE=1 to compile it instead`,
      );
      process.exit(0);
    }
    console.log(`bidora: the prebuilt addon does not load here (${result.reason}); compiling it from source`);
  } else {
    console.log(`bidora: no prebuilt addon for ${process.platform}-${process.arch}; compiling it from source`);
  }
}

const hasCmake = !forceGyp && spawnSync('cmake', ['--version'], { stdio: 'ignore' }).status === 0;

function nodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = dirname(dirname(process.execPath));
  if (existsSync(join(prefix, 'include', 'node', 'common.gypi'))) return prefix;
  console.error(
    `bidora: node-gyp needs Node's build settings, not found under ${prefix}/include/node; ` +
      'set npm_config_nodedir to a Node install or source tree',
  );
  process.exit(1);
}

// During `npm install` npm names its own bundled node-gyp; from a clone the dev dependency serves.
const nodeGyp = process.env.npm_config_node_gyp
  ? [process.execPath, [process.env.npm_config_node_gyp]]
  : ['npx', ['--no-install', 'node-gyp']];
const result = hasCmake
  ? run('npx', ['--no-install', 'cmake-js', 'compile', '--CDCMAKE_BUILD_TYPE=Release'])
  : run(nodeGyp[0], [...nodeGyp[1], 'rebuild', `--nodedir=${nodeDir()}`]);
if (result.status !== 0) {
  console.error(
    `bidora: building the native addon with ${hasCmake ? 'cmake-js' : 'node-gyp'} failed; a source build needs a ` +
      'C++17 compiler and CMake 3.18+ (or, without CMake, Python 3 for node-gyp)',
  );
  process.exit(result.status ?? 1);
}

// An installed package keeps the addon only: the CMake or node-gyp tree beside it is about 20 MB of objects that
// nothing loads. A clone keeps its tree for incremental rebuilds.
if (installing) {
  const addon = join(root, 'build', 'Release', 'bidora.node');
  const kept = join(root, 'bidora.node.built');
  renameSync(addon, kept);
  rmSync(join(root, 'build'), { recursive: true, force: true });
  mkdirSync(dirname(addon), { recursive: true });
  renameSync(kept, addon);
}
