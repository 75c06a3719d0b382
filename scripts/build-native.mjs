// Builds the addon at install time: CMake (cmake-js) when cmake is on the PATH, node-gyp otherwise. Neither
// downloads anything: Node-API headers come from the node-api-headers and node-addon-api packages.
import { spawnSync } from 'node:child_process';

const run = (command, args) => spawnSync(command, args, { stdio: 'inherit', shell: process.platform === 'win32' });
const hasCmake = spawnSync('cmake', ['--version'], { stdio: 'ignore' }).status === 0;

const result = hasCmake
  ? run('npx', ['--no-install', 'cmake-js', 'compile', '--CDCMAKE_BUILD_TYPE=Release'])
  : run('npx', ['--no-install', 'node-gyp', 'rebuild']);
if (result.status !== 0) {
  console.error(`bidora: building the native addon with ${hasCmake ? 'cmake-js' : 'node-gyp'} failed`);
  process.exit(result.status ?? 1);
}
