// Builds the addon: with CMake (cmake-js) when cmake is on the PATH, else with node-gyp; `--gyp` forces node-gyp.
// Neither downloads anything: Node-API headers come from the node-api-headers and node-addon-api packages, and
// node-gyp is pointed at the running Node's own install prefix for its build settings (common.gypi).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

const run = (command, args) => spawnSync(command, args, { stdio: 'inherit' });
const forceGyp = process.argv.includes('--gyp');
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
  console.error(`bidora: building the native addon with ${hasCmake ? 'cmake-js' : 'node-gyp'} failed`);
  process.exit(result.status ?? 1);
}
