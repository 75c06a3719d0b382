// RSS of plain synchronous loops at full length (the test runs a shorter one): 1e6 Tensor.zeros([4]).dispose() and
// 10,000 trainer.step() calls on the tiny BERT, in a child process, each from after its warm-up to its end.
// Run with `node bench/sync-loop-memory.mjs [tensors] [steps]` after `npm run build`.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const child = fileURLToPath(new URL('../test/fixtures/sync-loop-child.cjs', import.meta.url));
const [tensors = '1000000', steps = '10000'] = process.argv.slice(2);
const megabytes = (bytes) => (bytes / 2 ** 20).toFixed(1);
for (const flags of [[], ['--max-semi-space-size=1']]) {
  const result = JSON.parse(execFileSync(process.execPath, [...flags, child, tensors, steps], { encoding: 'utf8' }));
  const label = flags.length === 0 ? 'default V8 flags' : flags.join(' ');
  console.log(`${label}:`);
  console.log(`  ${tensors} tensors: RSS ${megabytes(result.tensors.start)} -> ${megabytes(result.tensors.end)} MiB`);
  console.log(`  ${steps} steps: RSS ${megabytes(result.steps.start)} -> ${megabytes(result.steps.end)} MiB`);
}
