// `npm run prebuild` (and `npm pack` through prepack): compiles the addons the npm package ships in
// prebuilds/<platform>-<arch>/, each in a fresh CMake tree under build/prebuild-*, and checks that each loads.
//   bidora.node       CPU only: what every install uses unless a source build is asked for or it does not load.
//   bidora-cuda.node  CPU + CUDA, when nvcc is found here (skip with --no-cuda): tried first where an NVIDIA driver is.
// A prebuild needs the build machine's glibc and libstdc++ or newer (Debian 12's: glibc 2.34, GCC 12's libstdc++).
// Linking libstdc++ statically was tried and needs a newer glibc still (2.36: arc4random, _dl_find_object).
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const target = join(root, 'prebuilds', `${process.platform}-${process.arch}`);

function fail(message) {
  console.error(`bidora prebuild: ${message}`);
  process.exit(1);
}

const hasNvcc =
  spawnSync('nvcc', ['--version'], { stdio: 'ignore' }).status === 0 || existsSync('/usr/local/cuda/bin/nvcc');
const variants = [{ file: 'bidora.node', cuda: false }];
if (process.argv.includes('--no-cuda')) console.log('bidora prebuild: --no-cuda: the CUDA variant is not built');
else if (hasNvcc) variants.push({ file: 'bidora-cuda.node', cuda: true });
else console.log('bidora prebuild: no nvcc here: only the CPU prebuild is built');

// Files of an earlier run go first: a CUDA prebuild from another machine must not ship beside a newer CPU one.
rmSync(target, { recursive: true, force: true });
mkdirSync(target, { recursive: true });

for (const { file, cuda } of variants) {
  const out = join(root, 'build', `prebuild-${cuda ? 'cuda' : 'cpu'}`);
  console.log(`bidora prebuild: compiling ${file} in ${relative(root, out)}/`);
  const args = [
    '--no-install',
    'cmake-js',
    'rebuild',
    '--out',
    out,
    '--target',
    'bidora',
    '--CDCMAKE_BUILD_TYPE=Release',
    `--CDBIDORA_CUDA=${cuda ? 'ON' : 'OFF'}`,
    // MPI is for source builds (README, docs/distributed.md): linked in, libmpi would stop the file loading wherever
    // Open MPI is not installed.
    '--CDBIDORA_MPI=OFF',
  ];
  const build = spawnSync('npx', args, { cwd: root, stdio: 'inherit' });
  if (build.status !== 0) fail(`compiling ${file} failed`);
  const built = join(out, 'Release', 'bidora.node');
  const shipped = join(target, file);
  copyFileSync(built, shipped);
  if (process.platform === 'linux' && spawnSync('strip', ['--version'], { stdio: 'ignore' }).status === 0) {
    execFileSync('strip', ['--strip-unneeded', shipped]);
  }

  // The shipped file, not the build tree's, is what must load: by its path alone, as the library's loader does.
  const check = spawnSync(
    process.execPath,
    ['-e', 'console.log(JSON.stringify(require(process.argv[1]).buildInfo()))', shipped],
    { encoding: 'utf8' },
  );
  if (check.status !== 0) fail(`${file} does not load: ${check.stderr.trim()}`);
  const info = JSON.parse(check.stdout);
  if (info.version !== version) fail(`${file} reports version ${info.version}, package.json says ${version}`);
  if (info.cuda !== cuda) fail(`${file} reports cuda: ${info.cuda}, expected ${cuda}`);
  if (process.platform === 'linux') {
    // Shared libraries it may need at load: the C and C++ runtimes, no CUDA library (the CUDA runtime is linked in,
    // and it opens the driver's libcuda at run time, so the file loads where there is no driver).
    const needed = execFileSync('objdump', ['-p', shipped], { encoding: 'utf8' })
      .split('\n')
      .filter((line) => line.trim().startsWith('NEEDED'))
      .map((line) => line.trim().split(/\s+/)[1]);
    const extra = needed.filter(
      (name) => !/^(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|ld-linux[\w-]*)\.so/.test(name),
    );
    if (extra.length > 0)
      fail(`${file} needs ${extra.join(', ')} at load: a prebuild may need only C and C++ runtimes`);
  }
  const size = (statSync(shipped).size / 1e6).toFixed(1);
  console.log(`bidora prebuild: ${relative(root, shipped)} (${size} MB) loads: isa ${info.isa}, cuda ${info.cuda}`);
}
