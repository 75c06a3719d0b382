// Proves the AVX2 and portable kernel paths on CPUs that lack the instructions above them: a few BiDoRA steps of a
// tiny model, its base in float32 and in bfloat16, run under Debian's qemu-user as a Haswell (AVX2, no AVX-512) and a
// Nehalem (no AVX), and must give the same figures, bit for bit, as this machine running the same path natively
// (BIDORA_ISA forces it here; under qemu the addon picks it from CPUID by itself); there, products with bfloat16
// weights must be float32-accurate (the weights widened, no AVX512-BF16).
// Usage: node scripts/cpu-paths-check.mjs   (needs qemu-x86_64 on the PATH and the built package in dist/)
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const self = fileURLToPath(import.meta.url);

if (process.argv[2] === '--child') {
  const bidora = createRequire(import.meta.url)('../dist/index.js');
  // A few BiDoRA steps of a tiny classifier, its base in `dtype`: the figures each step reports.
  const bidoraSteps = (dtype) => {
    const model = bidora.models.fromConfig(
      {
        architectures: ['BertForSequenceClassification'],
        model_type: 'bert',
        vocab_size: 24,
        hidden_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 32,
        max_position_embeddings: 12,
        num_labels: 2,
      },
      { seed: 3, dtype },
    );
    bidora.adapters.apply(model, {
      method: 'bidora',
      r: 2,
      targetModules: ['query', 'value'],
      modulesToSave: ['classifier'],
    });
    const trainer = new bidora.train.BiLevelTrainer({ model, batchSize: 8, log: 'none' });
    const random = new bidora.train.Random(11);
    const example = () => {
      const inputIds = [2, ...Array.from({ length: 4 + random.int(5) }, () => 5 + random.int(18)), 3];
      return { inputIds, label: inputIds.includes(7) ? 1 : 0 };
    };
    const figures = [];
    for (let step = 0; step < 4; step++) {
      const record = trainer.step(Array.from({ length: 8 }, example), Array.from({ length: 4 }, example), step);
      figures.push(record.loss, record.upperLoss, record.directNorm, record.secondOrderNorm);
    }
    return figures;
  };
  // A product with a bfloat16 weight on a CPU without AVX512-BF16 widens the weight: float32 accuracy, each element
  // within 2(k + 2) 2^-24 of the sum of its terms' sizes. Returns the largest error over that bound (at most 1).
  const widenedProductError = () => {
    const [m, n, k] = [37, 41, 129];
    const a = bidora.Tensor.randn([m, k], { seed: 5 });
    const b = bidora.Tensor.randn([k, n], { seed: 6 }).to('bfloat16');
    const c = bidora.ops.matmul(a, b).toFloat32Array();
    const [av, bv] = [a.toFloat32Array(), b.toFloat32Array()];
    let worst = 0;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let exact = 0;
        let size = 0;
        for (let p = 0; p < k; p++) {
          exact += av[i * k + p] * bv[p * n + j];
          size += Math.abs(av[i * k + p] * bv[p * n + j]);
        }
        worst = Math.max(worst, Math.abs(c[i * n + j] - exact) / (2 * (k + 2) * 2 ** -24 * size));
      }
    }
    return worst;
  };
  const figures = [...bidoraSteps('float32'), ...bidoraSteps('bfloat16')];
  process.stdout.write(JSON.stringify({ isa: bidora.buildInfo().isa, figures, widened: widenedProductError() }));
  process.exit(0);
}

function run(command, args, env = {}) {
  const result = spawnSync(command, args, { encoding: 'utf8', env: { ...process.env, ...env } });
  if (result.status !== 0) {
    // qemu warns once per CPUID feature it cannot emulate; only the rest says what failed.
    const stderr = result.stderr
      .split('\n')
      .filter((line) => !line.includes("TCG doesn't support requested feature"))
      .join('\n');
    throw new Error(`${command} ${args.join(' ')} exited with ${result.status ?? result.signal}\n${stderr}`);
  }
  return JSON.parse(result.stdout);
}

const cpus = [
  { cpu: 'Haswell', isa: 'avx2' },
  { cpu: 'Nehalem', isa: 'generic' },
];
let failed = false;
for (const { cpu, isa } of cpus) {
  const native = run(process.execPath, [self, '--child'], { BIDORA_ISA: isa });
  const emulated = run('qemu-x86_64', ['-cpu', cpu, process.execPath, self, '--child']);
  const same = emulated.isa === isa && JSON.stringify(emulated.figures) === JSON.stringify(native.figures);
  console.log(
    `${cpu}: the addon chose '${emulated.isa}' (expected '${isa}'); ${native.figures.length} figures ` +
      `${same ? 'identical to' : 'DIFFERENT from'} the native '${isa}' run; bfloat16-weight products at ` +
      `${emulated.widened.toFixed(3)} of the float32 error bound`,
  );
  if (emulated.widened > 1) failed = true;
  if (!same) {
    console.log(`  native:   ${JSON.stringify(native.figures)}\n  emulated: ${JSON.stringify(emulated.figures)}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
