// Loading models and adapters when the input is bad: a failed load changes nothing and leaks nothing, every config
// value is checked at load with an error naming its key and file, real PEFT folders (SEQ_CLS heads, rank_pattern,
// layers_to_transform) load as PEFT reads them, and stale temporary files of killed writers are cleaned up.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { adapters, io, memory, models, type nn, noGrad, ops, Tensor, tidy } from '../lib/index';
import { tinyBertConfig } from './fixtures/tiny-bert';
import { randomTensor, relativeError } from './helpers';

const root = mkdtempSync(join(tmpdir(), 'bidora-load-faults-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let folders = 0;
const folder = () => {
  const dir = join(root, `case-${folders++}`);
  mkdirSync(dir);
  return dir;
};

const inputIds = [
  [2, 7, 9, 11, 3, 0],
  [2, 5, 6, 8, 12, 3],
];
const logitsOf = (model: models.SequenceClassifier) =>
  tidy(() => noGrad(() => model.eval().forward({ inputIds }).logits.toFloat32Array()));

/** Everything a load could change: parameter names, values and requiresGrad, adapter scales, the recorded config. */
function snapshot(model: nn.Module): string {
  const parameters = model
    .namedParameters()
    .map(([name, tensor]) => `${name}[${tensor.shape}]${tensor.requiresGrad}:${Array.from(tensor.toFloat32Array())}`);
  const scales = adapters.adaptedLayers(model).map(({ path, adapter }) => `${path}:${adapter.options.scale}`);
  return JSON.stringify({ parameters, scales, config: adapters.appliedConfig(model) ?? null });
}

/** Moves every adapter off its initial point, as training would, so loaded values are told apart from fresh ones. */
function perturb(model: nn.Module): void {
  for (const { adapter } of adapters.adaptedLayers(model)) {
    const loraB = tidy(() => ops.scale(randomTensor(adapter.loraB.shape), 0.3)).requireGrad();
    adapter.loraB.dispose();
    adapter.loraB = loraB;
  }
}

/** An adapter folder saved from a tiny model: `change` edits its config, `tensors` its weights, before writing. */
function adapterFolder(
  config: Partial<adapters.AdapterConfig> = {},
  edit: { config?: (json: Record<string, unknown>) => void; tensors?: (map: Map<string, Tensor>) => void } = {},
): string {
  const model = models.fromConfig(tinyBertConfig(), { seed: 1 });
  adapters.apply(model, { method: 'dora', r: 2, alpha: 4, targetModules: ['query', 'value'], ...config });
  perturb(model);
  const dir = folder();
  adapters.save(model, dir);
  if (edit.tensors) {
    const weights = join(dir, adapters.ADAPTER_WEIGHTS_FILE);
    const { tensors } = io.readSafetensors(weights);
    edit.tensors(tensors);
    io.writeSafetensors(weights, tensors);
    for (const tensor of tensors.values()) tensor.dispose();
  }
  if (edit.config) {
    const file = join(dir, adapters.ADAPTER_CONFIG_FILE);
    const json = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    edit.config(json);
    writeFileSync(file, JSON.stringify(json));
  }
  model.dispose();
  return dir;
}

function replaceTensor(map: Map<string, Tensor>, key: string, make: (old: Tensor) => Tensor): void {
  const old = map.get(key)!;
  map.set(key, make(old));
  old.dispose();
}

const QUERY_0 = 'base_model.model.bert.encoder.layer.0.attention.self.query';

describe('adapters.load is all or nothing', () => {
  it('a failed load leaves the model as it was, frees what it read, and the right folder still loads', () => {
    const good = adapterFolder({ method: 'lora', r: 3, alpha: 6, targetModules: ['key'] });
    const bad: [string, RegExp][] = [
      [
        adapterFolder(
          {},
          { tensors: (map) => replaceTensor(map, `${QUERY_0}.lora_B.weight`, () => Tensor.zeros([5])) },
        ),
        /lora_B\.weight has shape \[5\] but the model expects \[32, 2\]/,
      ],
      [adapterFolder({}, { tensors: (map) => map.delete(`${QUERY_0}.lora_A.weight`) && undefined }), /lacks .*lora_A/],
      [
        adapterFolder(
          {},
          {
            tensors: (map) =>
              replaceTensor(map, `${QUERY_0}.lora_magnitude_vector`, (old) => {
                const values = old.toFloat32Array();
                values[7] = Number.NaN;
                return Tensor.from(values, old.shape);
              }),
          },
        ),
        /query\.lora_magnitude_vector.*element 7 .* is NaN/,
      ],
      [adapterFolder({}, { tensors: (map) => map.set('base_model.model.extra', Tensor.zeros([1])) }), /no place/],
      [adapterFolder({}, { config: (json) => (json.r = 64) }), /r = 64 exceeds min\(in, out\) = 32/],
    ];
    for (const start of ['fresh', 'adapted'] as const) {
      const model = models.fromConfig(tinyBertConfig(), { seed: 2 });
      if (start === 'adapted') {
        adapters.apply(model, { method: 'bidora', r: 4, targetModules: ['value'], modulesToSave: ['classifier'] });
        perturb(model);
      }
      const before = snapshot(model);
      const tensors = memory().tensors;
      for (const [dir, message] of bad) {
        expect(() => adapters.load(model, dir), `${start} ${dir}`).toThrow(message);
        expect(snapshot(model), `${start}: ${message}`).toBe(before);
        expect(memory().tensors).toBe(tensors);
      }
      adapters.load(model, good);
      const layers = adapters.adaptedLayers(model);
      expect(layers.map(({ path }) => path.split('.').slice(-1)[0])).toEqual(['key', 'key']);
      expect(layers.every(({ adapter }) => adapter.kind === 'lora' && adapter.options.scale === 2)).toBe(true);
      model.dispose();
    }
  });

  it('loading over existing adapters replaces them with the file’s r, alpha, method and targets, leaking nothing', () => {
    const saved = models.fromConfig(tinyBertConfig(), { seed: 3 });
    adapters.apply(saved, { method: 'dora', r: 2, alpha: 8, targetModules: ['query'], modulesToSave: ['classifier'] });
    perturb(saved);
    const dir = folder();
    adapters.save(saved, dir);
    const model = models.fromConfig(tinyBertConfig(), { seed: 3 });
    const tensors = memory().tensors;
    adapters.apply(model, { method: 'lora', r: 4, alpha: 4, targetModules: ['key', 'value', 'dense'] });
    perturb(model);
    adapters.load(model, dir);
    expect(logitsOf(model)).toEqual(logitsOf(saved));
    const layers = adapters.adaptedLayers(model);
    expect(layers.map(({ path }) => path)).toEqual([
      'bert.encoder.layer.0.attention.self.query',
      'bert.encoder.layer.1.attention.self.query',
    ]);
    for (const { adapter } of layers) {
      expect(adapter.loraA.shape).toEqual([2, 32]);
      expect(adapter.kind).toBe('dora');
      expect(adapter.options.scale).toBe(4);
    }
    expect(adapters.appliedConfig(model)).toMatchObject({ method: 'dora', r: 2, alpha: 8, targetModules: ['query'] });
    const trainable = model.namedParameters().filter(([, tensor]) => tensor.requiresGrad);
    expect(trainable.map(([name]) => name)).toHaveLength(2 * 3 + 2);
    // The replaced LoRA adapters (A and B on 10 layers) are freed: only the new A, B and m on 2 layers remain.
    expect(memory().tensors).toBe(tensors + 2 * 3);
    adapters.merge(model);
    expect(() => adapters.load(model, dir)).toThrow(/carries a merged adapter; unmerge it first/);
    model.dispose();
    saved.dispose();
  });
});

describe('config values are checked at load, naming the key', () => {
  const modelFolder = (config: Record<string, unknown>, withWeights = true): string => {
    const dir = folder();
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    if (withWeights) {
      const model = models.fromConfig(tinyBertConfig(), { seed: 4 });
      io.writeSafetensors(join(dir, 'model.safetensors'), new Map(model.namedParameters()));
      model.dispose();
    }
    return dir;
  };

  it('config.json: wrong types, out-of-range values and unbuildable sizes', () => {
    const bad: [Record<string, unknown>, ErrorConstructor, RegExp][] = [
      [{ layer_norm_eps: 'x' }, TypeError, /layer_norm_eps must be a number in \(0, 1\), got "x"/],
      [{ layer_norm_eps: 0 }, RangeError, /layer_norm_eps must be a number in \(0, 1\), got 0/],
      [{ layer_norm_eps: -1e-5 }, RangeError, /layer_norm_eps/],
      [{ initializer_range: 'x' }, TypeError, /initializer_range must be a non-negative number/],
      [{ pad_token_id: '0' }, TypeError, /pad_token_id must be a token id, got "0"/],
      [{ pad_token_id: 40 }, RangeError, /pad_token_id must be a token id in \[0, 40\), got 40/],
      [{ problem_type: 'regression', num_labels: 2 }, RangeError, /problem_type 'regression' needs num_labels 1/],
      [{ problem_type: 'multi_label' }, RangeError, /problem_type .* is not supported/],
      [{ architectures: 'BertModel' }, TypeError, /architectures must be a list of class names, got "BertModel"/],
      [{ architectures: ['GPT2Model'] }, RangeError, /architecture 'GPT2Model' is not supported/],
      [{ num_hidden_layers: 1e6 }, RangeError, /num_hidden_layers must be an integer in \[1, 1024\], got 1000000/],
      [{ hidden_size: '32' }, TypeError, /hidden_size must be an integer/],
      [{ vocab_size: 2.5 }, RangeError, /vocab_size must be an integer/],
      [{ hidden_dropout_prob: 1 }, RangeError, /hidden_dropout_prob must be a probability in \[0, 1\)/],
      [{ classifier_dropout: 'x' }, TypeError, /classifier_dropout/],
      [{ hidden_act: 7 }, TypeError, /hidden_act/],
      [{ model_type: 'gpt_neox' }, RangeError, /model_type "gpt_neox" is not supported/],
      [{ id2label: { 0: 'a', 1: 'b' }, num_labels: 3 }, RangeError, /num_labels 3 disagrees with the 2 labels/],
      [{ id2label: ['a', 'b'] }, TypeError, /id2label must map ids to label names/],
      [{ label2id: { a: 'x' } }, TypeError, /label2id/],
      [
        { vocab_size: 1 << 24, hidden_size: 1 << 16, num_attention_heads: 1 },
        RangeError,
        /parameters, which need [\d.]+ GiB of float32 memory; this machine has [\d.]+ GiB/,
      ],
    ];
    const tensors = memory().tensors;
    for (const [change, Class, message] of bad) {
      const dir = modelFolder(tinyBertConfig(change));
      let error: unknown;
      try {
        models.load(dir).dispose();
      } catch (caught) {
        error = caught;
      }
      expect(error, JSON.stringify(change)).toBeInstanceOf(Class);
      expect((error as Error).message, JSON.stringify(change)).toMatch(message);
      expect((error as Error).message).toContain(join(dir, 'config.json'));
      expect(memory().tensors).toBe(tensors);
    }
  });

  it('models.load frees the model it built when the weights cannot be read', () => {
    const missing = modelFolder(tinyBertConfig(), false);
    const corrupt = modelFolder(tinyBertConfig());
    writeFileSync(join(corrupt, 'model.safetensors'), Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 0x7b]));
    const before = memory();
    for (let attempt = 0; attempt < 20; attempt++) {
      expect(() => models.load(missing)).toThrow(/ENOENT/);
      expect(() => models.load(corrupt)).toThrow(/model\.safetensors: the header is not valid JSON/);
    }
    expect(memory().tensors).toBe(before.tensors);
    expect(memory().bytes).toBe(before.bytes);
  });

  it('adapter_config.json: each bad value is refused before the model changes', () => {
    const bad: [(json: Record<string, unknown>) => void, ErrorConstructor, RegExp][] = [
      [(json) => (json.modules_to_save = 'classifier'), TypeError, /modules_to_save must be a list of names or null/],
      [(json) => (json.target_modules = '('), RangeError, /target_modules is not a valid regular expression/],
      [(json) => (json.target_modules = []), TypeError, /target_modules must be a non-empty list of names/],
      [(json) => (json.target_modules = null), TypeError, /target_modules/],
      [(json) => (json.r = '2'), TypeError, /r must be an integer in \[1, 65536\], got "2"/],
      [(json) => (json.r = 0), RangeError, /r must be an integer/],
      [(json) => (json.lora_alpha = 'x'), TypeError, /lora_alpha must be a finite number/],
      [(json) => (json.lora_dropout = 1), RangeError, /lora_dropout must be a number in \[0, 1\)/],
      [(json) => (json.use_dora = 'yes'), TypeError, /use_dora must be true or false/],
      [(json) => (json.use_dora = false), RangeError, /bidora\.method "dora" disagrees with use_dora false/],
      [(json) => (json.peft_type = 'IA3'), RangeError, /peft_type must be "LORA"/],
      [(json) => (json.bias = 'all'), RangeError, /bias must be "none"/],
      [(json) => (json.init_lora_weights = 'pissa'), RangeError, /init_lora_weights must be/],
      [(json) => (json.rank_pattern = { query: 0 }), RangeError, /rank_pattern\["query"\] must be integers/],
      [(json) => (json.rank_pattern = { '(': 2 }), RangeError, /rank_pattern key "\(" is not a valid regular/],
      [(json) => (json.alpha_pattern = []), TypeError, /alpha_pattern must be an object/],
      [(json) => (json.layers_to_transform = '0'), TypeError, /layers_to_transform must be a layer index/],
      [(json) => (json.layers_pattern = 'layer'), RangeError, /layers_pattern needs layers_to_transform/],
      [(json) => (json.layers_to_transform = [7]), RangeError, /no Linear layer matches .* in layers 7/],
      [(json) => (json.exclude_modules = ['query']), RangeError, /exclude_modules must be unset/],
      [(json) => (json.layer_replication = [[0, 1]]), RangeError, /layer_replication must be unset/],
      [(json) => (json.bidora = { method: 'dora', detachNorm: 1 }), TypeError, /bidora\.detachNorm/],
      [(json) => (json.task_type = 3), TypeError, /task_type must be a string or null/],
    ];
    const model = models.fromConfig(tinyBertConfig(), { seed: 5 });
    adapters.apply(model, { method: 'lora', r: 4, targetModules: ['value'] });
    const before = snapshot(model);
    const tensors = memory().tensors;
    for (const [edit, Class, message] of bad) {
      const dir = adapterFolder({}, { config: edit });
      let error: unknown;
      try {
        adapters.load(model, dir);
      } catch (caught) {
        error = caught;
      }
      expect(error, String(edit)).toBeInstanceOf(Class);
      expect((error as Error).message, String(edit)).toMatch(message);
      expect((error as Error).message).toContain(join(dir, adapters.ADAPTER_CONFIG_FILE));
      expect(snapshot(model)).toBe(before);
      expect(memory().tensors, String(edit)).toBe(tensors);
    }
    model.dispose();
  });
});

describe('PEFT folders as PEFT reads them', () => {
  it('skips modules to save the model lacks (SEQ_CLS lists classifier and score)', () => {
    const dir = adapterFolder(
      { modulesToSave: ['classifier'] },
      { config: (json) => (json.modules_to_save = ['classifier', 'score']) },
    );
    const model = models.fromConfig(tinyBertConfig(), { seed: 6 });
    const config = adapters.load(model, dir);
    expect(config.modulesToSave).toEqual(['classifier', 'score']);
    expect(adapters.appliedConfig(model)!.modulesToSave).toEqual(['classifier']);
    model.dispose();
  });

  it('honours rank_pattern and alpha_pattern per layer, when applying, saving and loading', () => {
    const model = models.fromConfig(tinyBertConfig(), { seed: 7 });
    adapters.apply(model, {
      method: 'dora',
      r: 2,
      alpha: 4,
      targetModules: ['query', 'value'],
      rankPattern: { 'layer.1.attention.self.value': 6, query: 3 },
      alphaPattern: { '\\d\\.attention\\.self\\.query': 12 },
    });
    perturb(model);
    const byPath = (m: nn.Module) => new Map(adapters.adaptedLayers(m).map((layer) => [layer.path, layer.adapter]));
    const expected = {
      'bert.encoder.layer.0.attention.self.query': [3, 12 / 3],
      'bert.encoder.layer.0.attention.self.value': [2, 4 / 2],
      'bert.encoder.layer.1.attention.self.query': [3, 12 / 3],
      'bert.encoder.layer.1.attention.self.value': [6, 4 / 6],
    };
    for (const m of [model]) {
      const layers = byPath(m);
      for (const [path, [r, scale]] of Object.entries(expected)) {
        expect(layers.get(path)!.loraA.shape[0], path).toBe(r);
        expect(layers.get(path)!.options.scale, path).toBeCloseTo(scale, 12);
      }
    }
    const dir = folder();
    adapters.save(model, dir);
    const json = JSON.parse(readFileSync(join(dir, adapters.ADAPTER_CONFIG_FILE), 'utf8')) as Record<string, unknown>;
    expect(json.rank_pattern).toEqual({ 'layer.1.attention.self.value': 6, query: 3 });
    expect(json.alpha_pattern).toEqual({ '\\d\\.attention\\.self\\.query': 12 });
    const loaded = models.fromConfig(tinyBertConfig(), { seed: 7 });
    adapters.load(loaded, dir);
    const layers = byPath(loaded);
    for (const [path, [r, scale]] of Object.entries(expected)) {
      expect(layers.get(path)!.loraA.shape[0], path).toBe(r);
      expect(layers.get(path)!.options.scale, path).toBeCloseTo(scale, 12);
    }
    expect(relativeError(logitsOf(loaded), logitsOf(model))).toBeLessThan(1e-6);
    // A pattern only matches at a dot boundary: "uery" is not "query".
    const unmatched = models.fromConfig(tinyBertConfig(), { seed: 7 });
    adapters.apply(unmatched, { method: 'lora', r: 2, targetModules: ['query'], rankPattern: { uery: 5 } });
    expect(adapters.adaptedLayers(unmatched).every(({ adapter }) => adapter.loraA.shape[0] === 2)).toBe(true);
    model.dispose();
    loaded.dispose();
    unmatched.dispose();
  });

  it('honours layers_to_transform and layers_pattern', () => {
    const model = models.fromConfig(tinyBertConfig(), { seed: 8 });
    adapters.apply(model, {
      method: 'lora',
      r: 2,
      targetModules: ['query', 'value'],
      layersToTransform: [1],
      layersPattern: 'layer',
    });
    perturb(model);
    const paths = (m: nn.Module) => adapters.adaptedLayers(m).map(({ path }) => path);
    expect(paths(model)).toEqual([
      'bert.encoder.layer.1.attention.self.query',
      'bert.encoder.layer.1.attention.self.value',
    ]);
    const dir = folder();
    adapters.save(model, dir);
    const json = JSON.parse(readFileSync(join(dir, adapters.ADAPTER_CONFIG_FILE), 'utf8')) as Record<string, unknown>;
    expect(json).toMatchObject({ layers_to_transform: [1], layers_pattern: 'layer' });
    const loaded = models.fromConfig(tinyBertConfig(), { seed: 8 });
    adapters.load(loaded, dir);
    expect(paths(loaded)).toEqual(paths(model));
    expect(logitsOf(loaded)).toEqual(logitsOf(model));
    // PEFT's default layer index: the number after the last "<name>." in the module name.
    const single = models.fromConfig(tinyBertConfig(), { seed: 8 });
    adapters.apply(single, { method: 'lora', r: 2, targetModules: ['dense'], layersToTransform: 0 });
    expect(paths(single)).toEqual([
      'bert.encoder.layer.0.attention.output.dense',
      'bert.encoder.layer.0.intermediate.dense',
      'bert.encoder.layer.0.output.dense',
    ]);
    expect(() =>
      adapters.apply(single, { method: 'lora', r: 2, targetModules: 'query', layersToTransform: [0] }),
    ).toThrow(/layersToTransform needs targetModules as a list of names/);
    model.dispose();
    loaded.dispose();
    single.dispose();
  });
});

describe('files', () => {
  it('a deeply nested header is refused with an error naming the file, not a stack overflow', () => {
    const dir = folder();
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    for (const [name, json] of [
      ['offsets', `{"a":{"dtype":"F32","shape":[1],"data_offsets":${deep}}}`],
      ['shape', `{"a":{"dtype":"F32","shape":[${deep}],"data_offsets":[0,4]}}`],
      ['metadata', `{"__metadata__":{"a":${deep}}}`],
    ]) {
      const header = Buffer.from(json);
      const length = Buffer.alloc(8);
      length.writeBigUInt64LE(BigInt(header.length));
      const file = join(dir, `${name}.safetensors`);
      writeFileSync(file, Buffer.concat([length, header, Buffer.alloc(4)]));
      expect(() => io.readSafetensors(file), name).toThrow(new RegExp(`${name}\\.safetensors`));
      expect(() => io.readSafetensors(file), name).toThrow(TypeError);
    }
  });

  it('writing into a folder removes the temporary files killed writers left there, and only those', () => {
    const dir = folder();
    const dead = 2 ** 30 + 7; // above any pid_max: no such process
    const stale = [
      `.model.safetensors.${dead}-0.0123456789ab.tmp`,
      `.config.json.${dead}.abcdefabcdef.tmp`, // the name earlier versions wrote
      `.adapter_model.safetensors.${process.pid}-0.00000000beef.tmp`, // this pid, but no writer of ours has it open
    ];
    const kept = [
      'notes.tmp',
      '.model.safetensors.tmp',
      `.model.safetensors.${dead}-0.0123.tmp`,
      `.model.safetensors.${process.ppid}-0.0123456789ab.tmp`, // a live process may still be writing it
      `.model.safetensors.${process.pid}-5.0123456789ab.tmp`, // another thread of this process
    ];
    for (const name of [...stale, ...kept]) writeFileSync(join(dir, name), 'partial');
    // A write that starts another in the same folder: the outer, live temporary file must survive.
    io.writeFileAtomicWith(join(dir, 'outer.bin'), (append) => {
      append(Buffer.from('outer'));
      io.writeFileAtomic(join(dir, 'inner.bin'), 'inner');
      append(Buffer.from(' done'));
    });
    expect(readFileSync(join(dir, 'outer.bin'), 'utf8')).toBe('outer done');
    expect(readdirSync(dir).sort()).toEqual(['inner.bin', 'outer.bin', ...kept].sort());
  });
});

describe('fuzz of loading, in child processes', () => {
  it('1,200 mutated safetensors files and 300 broken folders: no crash, hang, wrong success, bad error or leak', async () => {
    const { runInChildren } = await import('./fixtures/fuzz-loads.mjs');
    const runs = await runInChildren({
      seed: 20261212,
      safetensorsCases: 1200,
      folderCases: 300,
      children: 3,
      timeoutMs: 60_000,
    });
    const outcomes: Record<string, number> = {};
    for (const run of runs) {
      const label = `child ${JSON.stringify(run.job)}`;
      // A crash shows as a signal or a non-zero status, a hang as the timeout.
      expect({ code: run.code, signal: run.signal, timedOut: run.timedOut }, `${label}\n${run.stderr}`).toEqual({
        code: 0,
        signal: null,
        timedOut: false,
      });
      const report = run.report!;
      expect(report.problems, label).toEqual([]);
      for (const [outcome, count] of Object.entries(report.outcomes))
        outcomes[outcome] = (outcomes[outcome] ?? 0) + count;
      const { leak } = report;
      expect(leak.refused, label).toBe(leak.loads);
      // Failed loads free everything at once, not at the next collection, and the RSS stays flat.
      expect(leak.after, label).toEqual(leak.before);
      expect(leak.rssAfter - leak.rssBefore, label).toBeLessThan(16 * 2 ** 20);
    }
    expect(Object.keys(outcomes).sort()).toEqual(['loaded', 'refused']);
    expect(outcomes.loaded + outcomes.refused).toBe(1500);
    // Both outcomes are exercised in earnest: the mutations are neither all harmless nor all fatal.
    expect(outcomes.loaded).toBeGreaterThan(200);
    expect(outcomes.refused).toBeGreaterThan(600);
  });
});
