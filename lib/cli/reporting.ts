// The reports the commands write: the charts and tables of a training run, and of the demo's comparison.
import { type Chart, fitOf, PALETTE, type Series, writeReport } from '../report/index';
import { mean, standardDeviation } from '../train/stats';

interface TrainingMetrics {
  method: string;
  history: { step: number; loss: number; upperLoss?: number; directNorm?: number; secondOrderNorm?: number }[];
  evals: { step: number; loss: number; metrics: Record<string, number> }[];
  final: Record<string, number>;
  decomposition: { layers: { path: string; deltaMagnitude: number; deltaDirection: number }[]; slope: number };
  [key: string]: unknown;
}

/** metrics.json, report.html, and loss / evaluation / ΔM-vs-ΔD charts for one `bidora train` run. */
export function writeTrainingReport(dir: string, metrics: TrainingMetrics): string[] {
  const lossSeries: Series[] = [
    { name: 'training loss', points: metrics.history.map((record) => ({ x: record.step, y: record.loss })) },
  ];
  const upper = metrics.history.filter((record) => record.upperLoss !== undefined);
  if (upper.length > 0)
    lossSeries.push({
      name: 'upper-split loss',
      points: upper.map((record) => ({ x: record.step, y: record.upperLoss! })),
    });
  const charts: Chart[] = [{ title: 'Training loss', xLabel: 'step', yLabel: 'loss', series: lossSeries }];
  if (metrics.evals.length > 0) {
    const names = Object.keys(metrics.evals[0].metrics);
    charts.push({
      title: 'Evaluation',
      xLabel: 'step',
      yLabel: 'metric',
      series: names.map((name) => ({
        name,
        style: 'line+points',
        points: metrics.evals.map((record) => ({ x: record.step, y: record.metrics[name] })),
      })),
    });
  }
  if (upper.length > 0) {
    charts.push({
      title: 'Hypergradient terms',
      xLabel: 'step',
      yLabel: 'norm',
      series: [
        { name: 'direct term ||g||', points: upper.map((record) => ({ x: record.step, y: record.directNorm! })) },
        {
          name: 'second-order term',
          points: upper.map((record) => ({ x: record.step, y: record.secondOrderNorm! })),
        },
      ],
    });
  }
  const layers = metrics.decomposition.layers;
  if (layers.length > 1) {
    const points = layers.map((layer) => ({ x: layer.deltaDirection, y: layer.deltaMagnitude }));
    charts.push({
      title: 'Magnitude vs direction change per layer',
      xLabel: 'ΔD (1 - cos)',
      yLabel: 'ΔM',
      series: [{ name: metrics.method, style: 'points', points }],
      fits: [fitOf(metrics.method, points)],
    });
  }
  const { files } = writeReport(dir, {
    title: `bidora train: ${metrics.method}`,
    summary: `Final metrics: ${Object.entries(metrics.final)
      .map(([name, value]) => `${name} ${value.toFixed(4)}`)
      .join(', ')}.`,
    tables: [
      {
        title: 'Final metrics',
        columns: ['metric', 'value'],
        rows: Object.entries(metrics.final).map(([name, value]) => [name, value]),
      },
    ],
    charts,
    metrics,
  });
  return files;
}

export interface DemoRow {
  method: string;
  lr: number;
  accuracyMean: number;
  accuracyStd: number;
  trainable: number;
  msPerStep: number;
}

export interface DemoReport {
  plan: unknown;
  encoder: unknown;
  adapter: unknown;
  classes: string[];
  rows: DemoRow[];
  /** Paired accuracy differences over seeds, `method` − `baseline`, with their signed-rank test. */
  comparisons: {
    method: string;
    baseline: string;
    differences: number[];
    wilcoxon: { statistic: number; pValue: number; n: number };
  }[];
  runs: Record<
    string,
    {
      accuracy: number;
      evals: { step: number; metrics: Record<string, number> }[];
      decomposition: { step: number; deltaMagnitude: number; deltaDirection: number }[];
    }[]
  >;
  seconds: number;
  table: string;
}

/** One colour per method in every chart of the demo, so the legend means the same thing throughout. */
const METHOD_COLORS: Record<string, string> = {
  head: PALETTE[6] ?? '#999999',
  lora: PALETTE[0],
  dora: PALETTE[1],
  bidora: PALETTE[2],
  'bidora+retrain': PALETTE[4],
  full: PALETTE[3],
};

/** The demo's report: validation curves (mean ± std over seeds) and ΔM against ΔD with fitted slopes. */
export function writeDemoReport(dir: string, report: DemoReport): string[] {
  const curves: Series[] = Object.entries(report.runs).map(([method, runs]) => {
    const steps = runs[0].evals.map((record) => record.step);
    const stats = steps.map((step, index) => {
      const values = runs.map((run) => run.evals[index]?.metrics.accuracy ?? NaN);
      return { step, mean: mean(values), std: runs.length > 1 ? standardDeviation(values) : 0 };
    });
    return {
      name: method,
      color: METHOD_COLORS[method],
      style: 'line+points',
      points: stats.map((entry) => ({ x: entry.step, y: entry.mean })),
      band: stats.map((entry) => ({ x: entry.step, low: entry.mean - entry.std, high: entry.mean + entry.std })),
    };
  });
  const scatter: Series[] = [];
  const fits = [];
  for (const [method, runs] of Object.entries(report.runs)) {
    const points = runs.flatMap((run) =>
      run.decomposition.map((entry) => ({ x: entry.deltaDirection, y: entry.deltaMagnitude })),
    );
    if (points.length < 2) continue;
    scatter.push({ name: method, color: METHOD_COLORS[method], style: 'points', points });
    fits.push(fitOf(method, points));
  }
  const charts: Chart[] = [
    { title: 'Validation accuracy during adaptation', xLabel: 'step', yLabel: 'accuracy', series: curves },
    {
      title: 'Magnitude vs direction change (all layers and checkpoints)',
      xLabel: 'ΔD (1 - cos)',
      yLabel: 'ΔM',
      series: scatter,
      fits,
    },
  ];
  const percent = (value: number) => (100 * value).toFixed(1);
  const { files } = writeReport(dir, {
    title: 'bidora demo: adapting a pretrained character encoder',
    summary:
      `Target task: predict the stressed vowel of an English word (${report.classes.length} classes) from its spelling, ` +
      `with few labelled words per class, after pretraining the encoder on the vowel of words' last syllables.\n\n` +
      report.comparisons
        .map(
          ({ method, baseline, differences, wilcoxon }) =>
            `${method} − ${baseline} per seed (accuracy points): ${differences.map(percent).join(', ')}; mean ` +
            `${percent(mean(differences))}, Wilcoxon signed-rank p = ${wilcoxon.pValue.toFixed(3)} (n = ${wilcoxon.n}).`,
        )
        .join('\n\n') +
      `\n\nRun time ${report.seconds.toFixed(0)} s.`,
    tables: [
      {
        title: 'Test accuracy over paired seeds',
        columns: ['method', 'accuracy % (mean ± std)', 'trainable parameters', 'ms / step', 'learning rate'],
        rows: report.rows.map((row) => [
          row.method,
          `${percent(row.accuracyMean)} ± ${percent(row.accuracyStd)}`,
          row.trainable,
          row.msPerStep.toFixed(1),
          row.lr,
        ]),
      },
    ],
    charts,
    metrics: report,
  });
  return files;
}
