// The command line end to end: `bidora train` on a tiny checkpoint folder and JSONL file written here, then the
// adapter loaded back and the metrics file checked; `eval`, `merge`, `bench` on a small shape, `--help`, and bad
// input named before any work.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { native } from '../lib/binding';
import { adapters, models, noGrad, tidy, tokenizers, train } from '../lib/index';
import { METHODS } from '../lib/cli/demo';
import { DATA_PACKAGE, DATA_VERSION, lastVowel, stressedVowel, tarEntry } from '../lib/cli/demo-data';
import { SPECIAL_TOKENS, wordPieceTokenizerJson } from './fixtures/wordpiece';

const root = mkdtempSync(join(tmpdir(), 'bidora-cli-'));
const cli = join(__dirname, '..', 'dist', 'cli', 'main.js');
const modelDir = join(root, 'tiny-bert');
afterAll(() => rmSync(root, { recursive: true, force: true }));

const words = ['good', 'great', 'fine', 'bad', 'awful', 'poor', 'nice', 'sad'];
const vocab = [...SPECIAL_TOKENS, ...words];

function writeTokenizer(dir: string): void {
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(wordPieceTokenizerJson(vocab)));
}

function writeData(path: string, count: number, seed: number): void {
  let state = seed;
  const next = () => (state = (state * 1103515245 + 12345) % 2147483648) / 2147483648;
  const lines = Array.from({ length: count }, () => {
    const chosen = Array.from({ length: 3 }, () => words[Math.floor(next() * words.length)]);
    const positive = chosen.filter((word) => ['good', 'great', 'fine', 'nice'].includes(word)).length >= 2;
    return JSON.stringify({ text: chosen.join(' '), label: positive ? 'pos' : 'neg' });
  });
  writeFileSync(path, lines.join('\n') + '\n');
}

function run(args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
}

beforeAll(() => {
  mkdirSync(modelDir);
  const model = models.fromConfig({
    architectures: ['BertForSequenceClassification'],
    model_type: 'bert',
    vocab_size: vocab.length,
    hidden_size: 32,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    intermediate_size: 64,
    max_position_embeddings: 16,
    num_labels: 2,
  });
  models.save(model, modelDir);
  model.dispose();
  writeTokenizer(modelDir);
  writeData(join(root, 'train.jsonl'), 160, 1);
  writeData(join(root, 'eval.jsonl'), 40, 2);
});

describe('bidora train --task token-classification', () => {
  // Tags the positive words as one-word entities (B-POS) and the rest O.
  function writeTokenData(path: string, count: number, seed: number): void {
    let state = seed;
    const next = () => (state = (state * 1103515245 + 12345) % 2147483648) / 2147483648;
    const lines = Array.from({ length: count }, () => {
      const tokens = Array.from({ length: 4 }, () => words[Math.floor(next() * words.length)]);
      const tags = tokens.map((word) => (['good', 'great', 'fine', 'nice'].includes(word) ? 'B-POS' : 'O'));
      return JSON.stringify({ tokens, ner_tags: tags });
    });
    writeFileSync(path, lines.join('\n') + '\n');
  }

  it('trains a token classifier from tokens + ner_tags, writes a PEFT folder, and eval reports entity F1', () => {
    writeTokenData(join(root, 'ner-train.jsonl'), 96, 3);
    writeTokenData(join(root, 'ner-eval.jsonl'), 24, 4);
    const out = join(root, 'ner-run');
    const trained = run(
      [
        'train',
        '--model',
        modelDir,
        '--data',
        join(root, 'ner-train.jsonl'),
        '--eval',
        join(root, 'ner-eval.jsonl'),
        '--task',
        'token-classification',
        '--method',
        'bidora',
        '--r',
        '4',
        '--epochs',
        '20',
        '--batch-size',
        '16',
        '--lr',
        '0.03',
        '--upper-lr',
        '0.03',
        '--log',
        'none',
      ].concat(['--out', out]),
    );
    expect(trained.stderr).not.toMatch(/Error/);
    expect(trained.status).toBe(0);
    const config = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(config.use_dora).toBe(true);
    expect(config.task_type).toBe('TOKEN_CLS');
    expect(JSON.parse(readFileSync(join(out, 'labels.json'), 'utf8'))).toEqual({
      labels: ['B-POS', 'O'],
      task: 'token-classification',
      seed: 0,
    });
    const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as {
      task: string;
      final: Record<string, number>;
    };
    expect(metrics.task).toBe('token-classification');
    expect(metrics.final.entityF1).toBeGreaterThan(0.8);
    const scored = run(['eval', '--model', modelDir, '--adapter', out, '--data', join(root, 'ner-eval.jsonl')]);
    expect(scored.status).toBe(0);
    const report = JSON.parse(scored.stdout) as Record<string, number>;
    expect(report.examples).toBe(24);
    expect(report.entityF1).toBeCloseTo(metrics.final.entityF1, 10);
    // A sequence task on token data is refused before training, naming the option.
    const wrong = run([
      'train',
      '--model',
      modelDir,
      '--data',
      join(root, 'ner-train.jsonl'),
      '--task',
      'regression',
      '--out',
      join(root, 'never'),
    ]);
    expect(wrong.status).toBe(2);
    expect(wrong.stderr).toMatch(/--task regression needs rows with "text" and "label"/);
  });
});

describe('bidora train --task multi-label', () => {
  it('trains from label lists, writes the classes, and eval reports micro-F1', () => {
    let state = 5;
    const next = () => (state = (state * 1103515245 + 12345) % 2147483648) / 2147483648;
    const lines = Array.from({ length: 64 }, () => {
      const chosen = Array.from({ length: 3 }, () => words[Math.floor(next() * words.length)]);
      const label = [
        ...(chosen.includes('good') || chosen.includes('great') ? ['praise'] : []),
        ...(chosen.includes('bad') || chosen.includes('awful') ? ['blame'] : []),
      ];
      return JSON.stringify({ text: chosen.join(' '), label });
    });
    writeFileSync(join(root, 'multi.jsonl'), lines.join('\n') + '\n');
    const out = join(root, 'multi-run');
    const trained = run([
      'train',
      '--model',
      modelDir,
      '--data',
      join(root, 'multi.jsonl'),
      '--method',
      'dora',
      '--r',
      '4',
      '--epochs',
      '4',
      '--lr',
      '0.01',
      '--log',
      'none',
      '--out',
      out,
    ]);
    expect(trained.stderr).not.toMatch(/Error/);
    expect(trained.status).toBe(0);
    expect(JSON.parse(readFileSync(join(out, 'labels.json'), 'utf8'))).toEqual({
      labels: ['blame', 'praise'],
      task: 'multi-label',
      seed: 0,
    });
    const scored = run(['eval', '--model', modelDir, '--adapter', out, '--data', join(root, 'multi.jsonl')]);
    expect(scored.status).toBe(0);
    const report = JSON.parse(scored.stdout) as Record<string, number>;
    expect(Object.keys(report).sort()).toEqual(['examples', 'loss', 'macroF1', 'microF1', 'subsetAccuracy']);
  });
});

describe('bidora train', () => {
  it('fine-tunes with DoRA, writes a PEFT adapter, metrics and a report, and the adapter loads back', () => {
    const out = join(root, 'run');
    execFileSync(
      process.execPath,
      [
        cli,
        'train',
        '--model',
        modelDir,
        '--data',
        join(root, 'train.jsonl'),
        '--eval',
        join(root, 'eval.jsonl'),
        '--method',
        'dora',
        '--r',
        '4',
        '--epochs',
        '8',
        '--batch-size',
        '16',
        '--lr',
        '1e-2',
        '--out',
        out,
        '--log',
        'none',
      ],
      { encoding: 'utf8' },
    );
    for (const file of [
      'adapter_config.json',
      'adapter_model.safetensors',
      'metrics.json',
      'report.html',
      'labels.json',
    ]) {
      expect(existsSync(join(out, file)), file).toBe(true);
    }
    const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8'));
    expect(metrics.method).toBe('dora');
    expect(metrics.labels).toEqual(['neg', 'pos']);
    expect(metrics.steps).toBe(80);
    expect(metrics.final.accuracy).toBeGreaterThanOrEqual(0);
    expect(metrics.evals).toHaveLength(8);
    const losses = metrics.history.map((record: { loss: number }) => record.loss);
    const average = (values: number[]) => values.reduce((total, value) => total + value, 0) / values.length;
    expect(average(losses.slice(-10))).toBeLessThan(average(losses.slice(0, 10)));
    const config = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({
      peft_type: 'LORA',
      r: 4,
      use_dora: true,
      target_modules: ['query', 'value'],
      modules_to_save: ['classifier'],
    });

    // The adapter loads into the base model and reproduces the reported accuracy.
    const model = models.load(modelDir);
    adapters.load(model, out);
    model.eval();
    const tokenizer = tokenizers.load(modelDir);
    const rows = readFileSync(join(root, 'eval.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { text: string; label: string });
    const batch = tokenizer.encodeBatch(rows.map((row) => row.text));
    const predictions = tidy(() => noGrad(() => model.forward(batch).logits.toFloat32Array()));
    let correct = 0;
    rows.forEach((row, index) => {
      const predicted = predictions[2 * index + 1] > predictions[2 * index] ? 'pos' : 'neg';
      if (predicted === row.label) correct++;
    });
    expect(correct / rows.length).toBeCloseTo(metrics.final.accuracy, 5);
    model.dispose();

    const scored = JSON.parse(
      execFileSync(
        process.execPath,
        [cli, 'eval', '--model', modelDir, '--adapter', out, '--data', join(root, 'eval.jsonl')],
        { encoding: 'utf8' },
      ),
    );
    expect(scored.accuracy).toBeCloseTo(metrics.final.accuracy, 5);
    const merged = join(root, 'merged');
    execFileSync(process.execPath, [cli, 'merge', '--model', modelDir, '--adapter', out, '--out', merged]);
    expect(existsSync(join(merged, 'model.safetensors'))).toBe(true);
  });

  it('trains BiDoRA from a JSON config file', () => {
    const out = join(root, 'bidora');
    const config = join(root, 'config.json');
    writeFileSync(
      config,
      JSON.stringify({
        model: modelDir,
        data: join(root, 'train.jsonl'),
        method: 'bidora',
        r: 2,
        maxSteps: 12,
        out,
        log: 'none',
      }),
    );
    const result = run(['train', '--config', config]);
    expect(result.status, result.stderr).toBe(0);
    const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8'));
    expect(metrics.history[0]).toHaveProperty('upperLoss');
  });

  it('names the file and the problem for bad input, before training', () => {
    const missingModel = run([
      'train',
      '--model',
      join(root, 'nope'),
      '--data',
      join(root, 'train.jsonl'),
      '--out',
      join(root, 'x'),
    ]);
    expect(missingModel.status).toBe(2);
    expect(missingModel.stderr).toMatch(/--model .*nope: no such folder/);
    const noColumn = join(root, 'no-label.jsonl');
    writeFileSync(noColumn, '{"text": "good"}\n');
    expect(run(['train', '--model', modelDir, '--data', noColumn, '--out', join(root, 'x')]).stderr).toMatch(
      /no-label\.jsonl:1: .*label/,
    );
    const empty = join(root, 'empty.jsonl');
    writeFileSync(empty, '');
    expect(run(['train', '--model', modelDir, '--data', empty, '--out', join(root, 'x')]).stderr).toMatch(
      /empty\.jsonl/,
    );
    const unseen = join(root, 'unseen.jsonl');
    writeFileSync(unseen, '{"text": "good", "label": "meh"}\n');
    expect(
      run([
        'train',
        '--model',
        modelDir,
        '--data',
        join(root, 'train.jsonl'),
        '--eval',
        unseen,
        '--out',
        join(root, 'x'),
      ]).stderr,
    ).toMatch(/unseen\.jsonl: example 1 has the label "meh"/);
    expect(run(['train', '--model', modelDir, '--out', join(root, 'x')]).stderr).toMatch(/--data is required/);
    const trainArgs = ['train', '--model', modelDir, '--data', join(root, 'train.jsonl'), '--out', join(root, 'x')];
    const tpu = run([...trainArgs, '--device', 'tpu']);
    expect(tpu.status).toBe(2);
    expect(tpu.stderr).toMatch(/--device tpu is not available here: this machine runs on cpu/);
    const half = run([...trainArgs, '--dtype', 'float16']);
    expect(half.status).toBe(2);
    expect(half.stderr).toMatch(/--dtype must be float32 or bfloat16; got float16/);
    if (!native.devices().includes('cuda')) {
      expect(run([...trainArgs, '--device', 'cuda']).stderr).toMatch(/--device cuda is not available here.*GPU/);
    }
    expect(run(['train', '--help']).stdout).toMatch(/Usage: bidora train/);
    const xi = run([...trainArgs, '--method', 'bidora', '--xi', '2']);
    expect([xi.status, xi.stderr]).toEqual([2, 'bidora train: --xi must be 1 or lower-lr, got "2"\n']);
    const sweep = run(['sweep', '--out', join(root, 'x')]);
    expect([sweep.status, sweep.stderr]).toEqual([2, 'bidora sweep: --task is required (or --report-only)\n']);
    expect(run(['sweep', '--task', 'nope', '--out', join(root, 'x')]).stderr).toMatch(
      /--task must be one of demo, spam/,
    );
    expect(run(['bogus']).status).toBe(2);
    expect(existsSync(join(root, 'x'))).toBe(false);
  });
});

describe('bidora train --task causal-lm and bidora generate', () => {
  // A tiny GPT-2 over characters, built here: it learns to spell words backwards after "=".
  const lmDir = join(root, 'tiny-gpt2');
  const animals = ['cat', 'dog', 'bird', 'fish', 'frog', 'moth', 'deer', 'lion', 'bear', 'wolf', 'hare', 'crab'];
  const tokenizer = tokenizers.CharTokenizer.fromTexts([...animals, '=']);
  const reversed = (word: string) => [...word].reverse().join('');

  beforeAll(() => {
    mkdirSync(lmDir);
    const model = models.fromConfig({
      architectures: ['GPT2LMHeadModel'],
      model_type: 'gpt2',
      vocab_size: tokenizer.vocabSize,
      n_embd: 32,
      n_layer: 2,
      n_head: 4,
      n_positions: 32,
      eos_token_id: tokenizer.sepId,
      bos_token_id: tokenizer.clsId,
      pad_token_id: tokenizer.padTokenId,
    });
    models.save(model, lmDir);
    model.dispose();
    tokenizer.save(join(lmDir, tokenizers.CHAR_TOKENIZER_FILE));
    const rows = (words: string[]) =>
      words.map((word) => JSON.stringify({ prompt: `${word}=`, completion: reversed(word) })).join('\n') + '\n';
    writeFileSync(join(root, 'lm-train.jsonl'), rows([...animals, ...animals, ...animals]));
    writeFileSync(join(root, 'lm-eval.jsonl'), rows(animals.slice(0, 4)));
    writeFileSync(join(root, 'lm-text.jsonl'), animals.map((word) => JSON.stringify({ text: word })).join('\n'));
  });

  it('trains DoRA on prompt/completion JSONL, writes a CAUSAL_LM adapter, and generate scores the completions', () => {
    const out = join(root, 'lm-run');
    const trained = run([
      'train',
      '--task',
      'causal-lm',
      '--model',
      lmDir,
      '--data',
      join(root, 'lm-train.jsonl'),
      '--eval',
      join(root, 'lm-eval.jsonl'),
      '--method',
      'dora',
      '--r',
      '4',
      '--epochs',
      '4',
      '--batch-size',
      '6',
      '--lr',
      '1e-2',
      '--out',
      out,
      '--log',
      'none',
    ]);
    expect(trained.status, trained.stderr).toBe(0);
    expect(trained.stdout).toMatch(/dora: 24 steps; eval perplexity \d/);
    const config = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({
      task_type: 'CAUSAL_LM',
      target_modules: ['c_attn'],
      fan_in_fan_out: true,
      modules_to_save: null,
      use_dora: true,
    });
    const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8'));
    expect(metrics.task).toBe('causal-lm');
    expect(metrics.final.perplexity).toBeCloseTo(Math.exp(metrics.final.loss), 6);
    // The evaluation file's completions are scored on what the trained model generates.
    for (const name of ['exactMatch', 'tokenErrorRate', 'editDistance', 'bleu']) {
      expect(Number.isFinite(metrics.final[name]), name).toBe(true);
    }
    const losses = metrics.history.map((record: { loss: number }) => record.loss);
    expect(Math.min(...losses.slice(-4))).toBeLessThan(Math.max(...losses.slice(0, 4)));

    const generated = run([
      'generate',
      '--model',
      lmDir,
      '--adapter',
      out,
      '--data',
      join(root, 'lm-eval.jsonl'),
      '--max-new-tokens',
      '6',
    ]);
    expect(generated.status, generated.stderr).toBe(0);
    const lines = generated.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(lines).toHaveLength(5);
    lines.slice(0, 4).forEach((line, index) => {
      expect(line.prompt).toBe(`${animals[index]}=`);
      expect(line.reference).toBe(reversed(animals[index]));
      expect(typeof line.generated).toBe('string');
    });
    const scores = lines[4].metrics;
    expect(scores.examples).toBe(4);
    for (const name of ['exactMatch', 'tokenErrorRate', 'editDistance', 'bleu']) {
      expect(Number.isFinite(scores[name]), name).toBe(true);
    }
    // The metrics are those of the printed generations, recomputed here from their characters.
    const predicted = lines.slice(0, 4).map((line) => [...line.generated].map((c) => tokenizer.tokenize(c)[0]));
    const references = lines.slice(0, 4).map((line) => tokenizer.tokenize(line.reference));
    const recomputed = train.generationMetrics(predicted, references);
    expect(scores.exactMatch).toBeCloseTo(recomputed.exactMatch, 12);
    expect(scores.tokenErrorRate).toBeCloseTo(recomputed.tokenErrorRate, 12);

    // eval scores the adapter on completions; merge folds it into a plain GPT-2 that generates the same.
    const evaluated = run(['eval', '--model', lmDir, '--adapter', out, '--data', join(root, 'lm-eval.jsonl')]);
    expect(evaluated.status, evaluated.stderr).toBe(0);
    expect(JSON.parse(evaluated.stdout)).toMatchObject({ examples: 4 });
    expect(JSON.parse(evaluated.stdout).perplexity).toBeGreaterThan(1);
    const merged = join(root, 'lm-merged');
    const merging = run(['merge', '--model', lmDir, '--adapter', out, '--out', merged]);
    expect(merging.status, merging.stderr).toBe(0);
    const again = run(['generate', '--model', merged, '--data', join(root, 'lm-eval.jsonl'), '--max-new-tokens', '6']);
    expect(again.stdout).toBe(generated.stdout);
  });

  it('trains BiDoRA on packed text over a bfloat16 base, and generates with sampling, the same on every run', () => {
    const out = join(root, 'lm-text-run');
    const trained = run([
      'train',
      '--task',
      'causal-lm',
      '--model',
      lmDir,
      '--data',
      join(root, 'lm-text.jsonl'),
      '--method',
      'bidora',
      '--dtype',
      'bfloat16',
      '--packing',
      '--max-length',
      '8',
      '--max-steps',
      '4',
      '--batch-size',
      '2',
      '--out',
      out,
      '--log',
      'none',
    ]);
    expect(trained.status, trained.stderr).toBe(0);
    const sample = () =>
      run([
        'generate',
        '--model',
        lmDir,
        '--adapter',
        out,
        '--prompt',
        'ca',
        '--prompt',
        'wol',
        '--do-sample',
        '--temperature',
        '0.8',
        '--top-k',
        '5',
        '--top-p',
        '0.9',
        '--seed',
        '7',
        '--max-new-tokens',
        '4',
      ]);
    const first = sample();
    expect(first.status, first.stderr).toBe(0);
    const lines = first.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(lines.map((line) => line.prompt)).toEqual(['ca', 'wol']);
    expect(lines.every((line) => !('metrics' in line))).toBe(true);
    expect(sample().stdout).toBe(first.stdout);
    const beams = run(['generate', '--model', lmDir, '--prompt', 'ca', '--num-beams', '2', '--max-new-tokens', '3']);
    expect(beams.status, beams.stderr).toBe(0);
  });

  it('names the argument that is wrong, with the command once', () => {
    const generate = (...args: string[]) => run(['generate', '--model', lmDir, ...args]);
    expect(generate().stderr).toBe(
      'bidora generate: give --prompt <text> (one or more) or --data <file.jsonl>, not both\n',
    );
    expect(generate('--prompt', 'a', '--data', join(root, 'lm-eval.jsonl')).status).toBe(2);
    expect(generate('--prompt', 'a', '--top-p', '1.5').stderr).toMatch(/^bidora generate: --top-p must be in \(0, 1\]/);
    expect(generate('--prompt', 'a', '--max-new-tokens', '0').stderr).toMatch(/--max-new-tokens must be a positive/);
    expect(generate('--prompt', 'a', '--temperature', 'hot').stderr).toMatch(/--temperature must be a number/);
    expect(generate('--prompt', '').stderr).toMatch(/--prompt 1: the prompt is empty/);
    expect(run(['generate', '--model', modelDir, '--prompt', 'a']).stderr).toMatch(
      /--model .*tiny-bert holds BertForSequenceClassification, not a causal language model/,
    );
    expect(generate('--prompt', 'a', '--adapter', join(root, 'nope')).stderr).toMatch(
      /--adapter .*nope: adapter_config\.json is missing/,
    );
    const badLine = join(root, 'lm-bad.jsonl');
    writeFileSync(badLine, '{"text": "cat"}\n{"prompt": "dog="}\n');
    const trainLM = (...args: string[]) =>
      run(['train', '--task', 'causal-lm', '--model', lmDir, '--out', join(root, 'y'), ...args]);
    expect(trainLM('--data', badLine).stderr).toMatch(/^bidora train: --data .*lm-bad\.jsonl:2: this line has/);
    expect(trainLM('--data', join(root, 'lm-text.jsonl'), '--max-length', '64').stderr).toMatch(
      /--max-length 64 exceeds the 32 positions/,
    );
    expect(
      run(['train', '--model', modelDir, '--data', join(root, 'train.jsonl'), '--packing', '--out', join(root, 'y')])
        .stderr,
    ).toMatch(/--packing applies to --task causal-lm only/);
    expect(trainLM('--data', join(root, 'lm-text.jsonl'), '--model', modelDir).stderr).toMatch(
      /not a causal language model/,
    );
    expect(existsSync(join(root, 'y'))).toBe(false);
  });
});

describe('bidora bench', () => {
  it('times the four layer variants in both settings, prints the table and writes ratios to JSON', () => {
    const out = join(root, 'bench.json');
    const result = run(['bench', '--shape', '64,64,64,4', '--shape', '32,48,40,2', '--quick', '--out', out]);
    expect(result.status, result.stderr).toBe(0);
    const lines = result.stdout.split('\n');
    const header = lines.find((line) => line.startsWith('N, K, M, r'));
    expect(header).toBeDefined();
    for (const column of ['LoRA ms', 'DoRA ms', 'DoRA/LoRA', 'through norm ms', 'through/LoRA', 'naive DoRA ms'])
      expect(header).toContain(column);
    // A row per shape and setting, each ratio as "median (low–high)" over the rounds.
    const rows = lines.filter((line) => /^(64, 64, 64, 4|32, 48, 40, 2) +(input is data|inner layer) /.test(line));
    expect(rows).toHaveLength(4);
    for (const row of rows) expect(row.match(/\d+\.\d\d \(\d+\.\d\d–\d+\.\d\d\)/g)).toHaveLength(3);

    const record = JSON.parse(readFileSync(out, 'utf8')) as {
      command: string;
      quick: boolean;
      device: string;
      rows: {
        n: number;
        setting: string;
        inputGradient: boolean;
        rounds: number;
        roundRatios: Record<string, number[]>;
        [key: string]: unknown;
      }[];
    };
    expect(record).toMatchObject({ command: 'bidora bench', quick: true, device: 'cpu' });
    expect(record.rows.map((row) => [row.n, row.setting])).toEqual([
      [64, 'input is data'],
      [32, 'input is data'],
      [64, 'inner layer'],
      [32, 'inner layer'],
    ]);
    for (const row of record.rows) {
      for (const key of ['loraMs', 'doraMs', 'doraThroughNormMs', 'naiveDoraMs', 'doraOverLora', 'naiveOverDora']) {
        expect(row[key], key).toBeGreaterThan(0);
        expect(Number.isFinite(row[key]), key).toBe(true);
      }
      expect(row.doraThroughNormOverLora).toBeGreaterThan(0);
      for (const ratios of Object.values(row.roundRatios)) {
        expect(ratios).toHaveLength(row.rounds);
        for (const ratio of ratios) expect(ratio).toBeGreaterThan(0);
      }
    }
  });

  it('names the argument that is wrong, before timing anything', () => {
    const cases: [string[], RegExp][] = [
      [['--shape', '64,64,64'], /^bidora bench: --shape must be four positive integers N,K,M,r .*got "64,64,64"\n$/],
      [['--shape', '64,64,0,4'], /--shape must be four positive integers/],
      [['--shape', '64,8,64,16'], /--shape 64,8,64,16: the rank r must be at most K and M/],
      [['--threads', '0'], /--threads must be a positive integer, got 0/],
      [['--rounds', 'two'], /--rounds must be a number, got "two"/],
      [['--device', 'tpu'], /--device tpu is not available here/],
    ];
    for (const [args, message] of cases) {
      const result = run(['bench', ...args, '--out', join(root, 'never.json')]);
      expect(result.status, args.join(' ')).toBe(2);
      expect(result.stderr).toMatch(message);
      expect(result.stdout).toBe('');
    }
    expect(existsSync(join(root, 'never.json'))).toBe(false);
  });
});

describe('bidora, whatever the command', () => {
  it('prints the package version for --version and -v, without loading the addon', () => {
    const version = (JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string })
      .version;
    for (const flag of ['--version', '-v']) {
      // A missing addon file would fail a command that loads it; --version must print regardless.
      const result = spawnSync(process.execPath, [cli, flag], {
        encoding: 'utf8',
        env: { ...process.env, BIDORA_ADDON: join(root, 'no-such-addon.node') },
      });
      expect(result.status, result.stderr).toBe(0);
      expect(result.stdout).toBe(`${version}\n`);
    }
  });

  it('names the command once in an error', () => {
    const missing = run(['train', '--model', modelDir, '--out', join(root, 'x')]);
    expect(missing.stderr).toBe('bidora train: --data is required (see bidora train --help)\n');
    const unknown = run(['eval', '--bogus']);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/^bidora eval: Unknown option '--bogus'.*\(see bidora eval --help\)\n$/);
    expect(unknown.stderr.match(/bidora eval:/g)).toHaveLength(1);
  });

  it('shows each command its help for -h as for --help', () => {
    for (const command of ['demo', 'train', 'eval', 'merge', 'generate', 'sweep', 'bench']) {
      const short = run([command, '-h']);
      expect(short.status, short.stderr).toBe(0);
      expect(short.stdout).toMatch(new RegExp(`^Usage: bidora ${command} `));
      expect(short.stdout).toBe(run([command, '--help']).stdout);
    }
    expect(run(['-h']).stdout).toMatch(/^Usage: bidora <command>/);
  });
});

describe('the demo', () => {
  it('shows BiDoRA with its retraining phase as its own row, right after BiDoRA', () => {
    expect(METHODS).toEqual(['head', 'lora', 'dora', 'bidora', 'bidora+retrain', 'full']);
  });

  it("pretrains on the last syllable's vowel and adapts to the stressed one", () => {
    const word = { word: 'banana', phonemes: ['B', 'AH0', 'N', 'AE1', 'N', 'AH0'] };
    expect(lastVowel(word)).toBe('AH');
    expect(stressedVowel(word)).toBe('AE');
    expect(lastVowel({ word: 'nth', phonemes: ['EH1', 'N', 'TH'] })).toBe('EH');
    expect(lastVowel({ word: 'hmm', phonemes: ['HH', 'M'] })).toBeUndefined();
  });
});

describe('the demo data', () => {
  it('pins the data package version package.json installs for development', () => {
    const manifest = JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as {
      devDependencies: Record<string, string>;
    };
    expect(manifest.devDependencies[DATA_PACKAGE]).toBe(DATA_VERSION);
  });

  it('reads one file out of a tar archive, long paths and padding included', () => {
    const dir = join(root, 'tar');
    const deep = join('package', 'a'.repeat(60), 'b'.repeat(60));
    mkdirSync(join(dir, deep), { recursive: true });
    writeFileSync(join(dir, 'package', 'first.txt'), 'x'.repeat(700));
    writeFileSync(join(dir, deep, 'dict.json'), '{"HELLO": "HH AH0 L OW1"}');
    execFileSync('tar', ['--format=ustar', '-cf', join(dir, 'archive.tar'), '-C', dir, 'package']);
    const archive = readFileSync(join(dir, 'archive.tar'));
    expect(tarEntry(archive, `${deep}/dict.json`)?.toString()).toBe('{"HELLO": "HH AH0 L OW1"}');
    expect(tarEntry(archive, 'package/first.txt')?.length).toBe(700);
    expect(tarEntry(archive, 'package/missing.json')).toBeUndefined();
  });
});
