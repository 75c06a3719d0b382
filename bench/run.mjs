// The benchmark suites: `npm run bench [-- gemm|dora|bert|bilevel|eventloop|families|causal-lm|generate|bf16|
// allreduce] [--quick] [--threads 1,2]`. Prints GFLOP/s and ratios against baselines measured in the same run, and
// writes bench/results/<suite>.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';

import { runAllreduce } from './allreduce.mjs';
import { runBert } from './bert.mjs';
import { runBf16 } from './bf16.mjs';
import { runBilevel } from './bilevel.mjs';
import { runCausalLm, runGenerate } from './causal-lm.mjs';
import { runDora } from './dora.mjs';
import { runEventLoop } from './event-loop.mjs';
import { runFamilies } from './families.mjs';
import { runGemm } from './gemm.mjs';

const require = createRequire(import.meta.url);
const bidora = require('bidora');

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const threadsArg = args.indexOf('--threads');
const threadCounts = threadsArg >= 0 ? args[threadsArg + 1].split(',').map(Number) : [bidora.buildInfo().poolThreads];

const suites = {
  gemm: runGemm,
  dora: runDora,
  bert: runBert,
  bilevel: runBilevel,
  eventloop: runEventLoop,
  families: runFamilies,
  'causal-lm': runCausalLm,
  generate: runGenerate,
  bf16: runBf16,
  allreduce: runAllreduce,
};
const named = args.filter((arg) => arg in suites);
const selected = named.length > 0 ? named : Object.keys(suites);

const info = bidora.buildInfo();
console.log(`bidora ${info.version}, ${info.isa} path, pool of ${info.poolThreads} threads, ${os.cpus()[0].model}`);
const results = new URL('./results/', import.meta.url);
mkdirSync(results, { recursive: true });
for (const suite of selected) {
  console.log(`\n== ${suite}`);
  const rows = [];
  for (const threads of threadCounts) rows.push(...(await suites[suite](bidora, { quick, threads })));
  const record = { suite, date: new Date().toISOString(), quick, buildInfo: info, cpu: os.cpus()[0].model, rows };
  const file = `${suite}${quick ? '-quick' : ''}.json`;
  writeFileSync(new URL(file, results), JSON.stringify(record, null, 2) + '\n');
}
