// Checks (or with --fix, applies) clang-format on the native sources, using the clang-format npm package's binary.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const fix = process.argv.includes('--fix');
const sources = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (/\.(cc|h|cu|cuh|c)$/.test(name)) sources.push(path);
  }
};
walk('native');
walk('bench');
const args = fix ? ['-i', ...sources] : ['--dry-run', '--Werror', ...sources];
const result = spawnSync('npx', ['--no-install', 'clang-format', ...args], { stdio: 'inherit' });
if (result.status !== 0) {
  if (!fix) console.error('clang-format: run `npm run format` to fix the files above');
  process.exit(result.status ?? 1);
}
