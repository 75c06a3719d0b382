// The weight-decomposition analysis of the DoRA and BiDoRA papers: how far training moved each adapted layer's
// magnitude (ΔM) and direction (ΔD) away from the pretrained weight, and the slope of ΔM against ΔD.
import { noGrad } from '../autograd';
import { doraWeightNorm } from '../ops/adapter';
import { mul } from '../ops/elementwise';
import { matmul } from '../ops/matmul';
import { sum } from '../ops/reduce';
import { type Module } from '../nn/module';
import { tidy } from '../tensor';
import { adaptedLayers } from './layers';

/** How far training moved one adapted layer from its pretrained weight W0. */
export interface LayerDecomposition {
  /** The Linear layer's dotted module path, e.g. bert.encoder.layer.0.attention.self.query. */
  path: string;
  /** mean_i |m_i − ||W0_i|||, with m the magnitude vector (DoRA) or the row norms of W0 + s B A (LoRA). */
  deltaMagnitude: number;
  /** mean_i (1 − cos(V_i, W0_i)), V = W0 + s B A the direction. */
  deltaDirection: number;
}

/** The weight-decomposition analysis of a model: per-layer ΔM and ΔD, and the trend between them. */
export interface DecompositionAnalysis {
  /** One entry per adapted layer, in module order. */
  layers: LayerDecomposition[];
  /** Least-squares slope of ΔM against ΔD over the layers (negative: DoRA-like, positive: LoRA-like). */
  slope: number;
}

/** ΔM and ΔD per adapted layer, computed from factored terms (no merged weight is formed). */
export function analyze(model: Module): DecompositionAnalysis {
  const layers = noGrad(() =>
    adaptedLayers(model).map(({ path, layer, adapter }) => {
      if (adapter.merged) throw new TypeError(`adapters.analyze: ${path} is merged; unmerge it first`);
      return tidy(() => {
        const { loraA, loraB, magnitude } = adapter;
        const scale = adapter.options.scale;
        // A bfloat16 W0 is widened (exactly) for these float32 products; the copy lives for this layer only.
        const weight = layer.weight.to('float32');
        const baseNorms = Float64Array.from(sum(mul(weight, weight), { axis: 1 }).toFloat32Array(), Math.sqrt);
        // V_i · W0_i = ||W0_i||² + s (W0 Aᵀ)_i · B_i
        const cross = sum(mul(matmul(weight, loraA, { transposeB: true }), loraB), { axis: 1 }).toFloat32Array();
        const norms = doraWeightNorm({ weight, loraA, loraB, scale }).toFloat32Array();
        const magnitudes = magnitude?.toFloat32Array() ?? norms;
        let deltaMagnitude = 0;
        let deltaDirection = 0;
        for (let row = 0; row < baseNorms.length; row++) {
          const dot = baseNorms[row] ** 2 + scale * cross[row];
          const cosine = baseNorms[row] === 0 ? 1 : dot / (norms[row] * baseNorms[row]);
          deltaMagnitude += Math.abs(magnitudes[row] - baseNorms[row]);
          deltaDirection += 1 - cosine;
        }
        return {
          path,
          deltaMagnitude: deltaMagnitude / baseNorms.length,
          deltaDirection: deltaDirection / baseNorms.length,
        };
      });
    }),
  );
  return { layers, slope: slope(layers) };
}

/** The least-squares slope of ΔM against ΔD over points (layers, or layers × checkpoints); 0 if ΔD is constant. */
export function slope(points: readonly LayerDecomposition[]): number {
  const count = points.length;
  if (count < 2) return 0;
  const meanX = points.reduce((total, point) => total + point.deltaDirection, 0) / count;
  const meanY = points.reduce((total, point) => total + point.deltaMagnitude, 0) / count;
  let covariance = 0;
  let variance = 0;
  for (const point of points) {
    covariance += (point.deltaDirection - meanX) * (point.deltaMagnitude - meanY);
    variance += (point.deltaDirection - meanX) ** 2;
  }
  return variance === 0 ? 0 : covariance / variance;
}
