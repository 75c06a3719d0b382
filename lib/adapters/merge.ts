// Folding adapters into the base weights (so the model saves as a plain checkpoint) and back out.
import { noGrad } from '../autograd';
import { type Module } from '../nn/module';
import { adaptedLayers } from './layers';

/**
 * Replaces each adapted layer's base weight by the merged one, (m / n)(W0 + s B A) for DoRA or W0 + s B A for LoRA;
 * forward then runs the plain product. The adapters stay attached for unmerge.
 */
export function merge(model: Module): void {
  noGrad(() => {
    for (const { path, layer, adapter } of adaptedLayers(model)) {
      if (adapter.merged) throw new TypeError(`adapters.merge: ${path} is already merged`);
      const { loraA, loraB, magnitude } = adapter;
      const weight = layer.weight;
      const merged = adapter.layerKind.merge({ weight, loraA, loraB, magnitude, scale: adapter.options.scale });
      layer.weight = merged.weight;
      adapter.mergedNorm = merged.mergedNorm;
      weight.dispose();
      adapter.merged = true;
    }
  });
}

/** Restores W0 in every merged layer (to rounding) and re-activates the adapters. */
export function unmerge(model: Module): void {
  noGrad(() => {
    for (const { path, layer, adapter } of adaptedLayers(model)) {
      if (!adapter.merged) throw new TypeError(`adapters.unmerge: ${path} is not merged`);
      const { loraA, loraB, magnitude } = adapter;
      const merged = layer.weight;
      const state = { loraA, loraB, magnitude, scale: adapter.options.scale };
      layer.weight = adapter.layerKind.unmerge(merged, state, adapter.mergedNorm);
      merged.dispose();
      adapter.mergedNorm?.dispose();
      adapter.mergedNorm = undefined;
      adapter.merged = false;
    }
  });
}
