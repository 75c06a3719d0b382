// The benchmark suite: `npm run bench [-- --quick] [-- --threads 1,2]`. Prints GFLOP/s and ratios against
// baselines measured in the same run, and writes bench/results/<suite>.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';

import { runGemm } from './gemm.mjs';

const require = createRequire(import.meta.url);
const bidora = require('bidora');

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const threadsArg = args.indexOf('--threads');
const threadCounts = threadsArg >= 0 ? args[threadsArg + 1].split(',').map(Number) : [bidora.buildInfo().poolThreads];

const info = bidora.buildInfo();
console.log(`bidora ${info.version}, ${info.isa} path, pool of ${info.poolThreads} threads, ${os.cpus()[0].model}`);
const rows = threadCounts.flatMap((threads) => runGemm(bidora, { quick, threads }));

const results = new URL('./results/', import.meta.url);
mkdirSync(results, { recursive: true });
const record = { suite: 'gemm', date: new Date().toISOString(), quick, buildInfo: info, cpu: os.cpus()[0].model, rows };
writeFileSync(new URL(quick ? 'gemm-quick.json' : 'gemm.json', results), JSON.stringify(record, null, 2) + '\n');
