// The cost of data parallelism over adapters (`npm run bench -- allreduce`): two ranks under `mpirun -n 2`
// (bench/allreduce-rank.mjs), each training DoRA on its 8 of a global batch of 16 sequences of the BERT-base-sized
// stack, one kernel thread each. Reports the all-reduce of one step's adapter gradients against the whole step, both
// measured in the same run, with the bytes reduced; then the same global batch in one process with two threads. Needs a build with MPI (`buildInfo().mpi`) and mpirun on the PATH.
import { spawnSync } from 'node:child_process';

import { median } from './baselines.mjs';
import { makeBatch, makeModel, shape } from './bert.mjs';

/** Median seconds of a Trainer step on the whole global batch in this one process, with `threads` kernel threads. */
function oneProcessStep(bidora, globalBatch, threads, quick) {
  const previous = bidora.setNumThreads(threads);
  const model = makeModel(bidora, 'dora');
  model.train();
  const batch = makeBatch(1, globalBatch);
  const examples = batch.inputIds.map((inputIds, index) => ({ inputIds, label: batch.labels[index] }));
  const trainer = new bidora.train.Trainer({ model, batchSize: globalBatch, maxSteps: 100 });
  const seconds = [];
  for (let index = 0; index < (quick ? 3 : 8); index++) {
    const started = process.hrtime.bigint();
    trainer.step(examples, index);
    seconds.push(Number(process.hrtime.bigint() - started) / 1e9);
  }
  trainer.dispose();
  model.dispose();
  bidora.setNumThreads(previous);
  return median(seconds.slice(1));
}

export function runAllreduce(bidora, { quick }) {
  if (!bidora.buildInfo().mpi) {
    console.log('allreduce skipped: this build of bidora has no MPI (install libopenmpi-dev and rebuild)');
    return [];
  }
  const script = new URL('./allreduce-rank.mjs', import.meta.url).pathname;
  const result = spawnSync(
    'mpirun',
    ['-n', '2', '--oversubscribe', process.execPath, script, ...(quick ? ['--quick'] : [])],
    {
      encoding: 'utf8',
      env: {
        ...process.env,
        OMPI_ALLOW_RUN_AS_ROOT: '1',
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1',
        BIDORA_NUM_THREADS: '1',
      },
    },
  );
  if (result.status !== 0) throw new Error(`allreduce: mpirun failed:\n${result.stdout}${result.stderr}`);
  const row = JSON.parse(result.stdout.trim().split('\n').at(-1));
  console.log(
    `dora, 2 ranks × 1 thread, global batch ${row.globalBatch} × ${row.seq}: ${row.msPerStep.toFixed(1)} ms/step; ` +
      `all-reduce of ${row.tensors} adapter gradients (${(row.gradientBytes / 1e6).toFixed(2)} MB) ` +
      `${row.allreduceMs.toFixed(3)} ms = ${(row.allreduceToStep * 100).toFixed(3)} % of the step ` +
      `(bus bandwidth ${row.busBandwidthGBs.toFixed(2)} GB/s)`,
  );
  // The same global batch in one process on both cores: what the two ranks replace.
  const oneProcessMs = oneProcessStep(bidora, row.globalBatch, 2, quick) * 1e3;
  console.log(
    `dora, 1 process × 2 threads, batch ${row.globalBatch} × ${shape.seq}: ${oneProcessMs.toFixed(1)} ms/step ` +
      `(2 ranks take ${(row.msPerStep / oneProcessMs).toFixed(2)}× its time on the same 2 cores)`,
  );
  return [{ method: 'dora', threads: 1, ...row, oneProcessTwoThreadsMs: oneProcessMs }];
}
