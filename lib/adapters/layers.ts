// Finding the adapted layers of a model.
import { Linear, type LinearAdapter } from '../nn/layers';
import { type Module } from '../nn/module';

/** One Linear layer that carries an adapter, as `adaptedLayers` finds it. */
export interface AdaptedLayer {
  /** The Linear layer's dotted module path, e.g. bert.encoder.layer.0.attention.self.query. */
  path: string;
  /** The layer itself, whose `weight` is the frozen W0. */
  layer: Linear;
  /** Its adapter (`layer.adapter`): A, B, the magnitude for DoRA, and its options. */
  adapter: LinearAdapter;
}

/** Every Linear layer of `model` that has an adapter, in module order (the order of `namedModules()`). */
export function adaptedLayers(model: Module): AdaptedLayer[] {
  return model
    .namedModules()
    .filter(([, module]) => module instanceof Linear && module.adapter !== undefined)
    .map(([path, module]) => ({ path, layer: module as Linear, adapter: (module as Linear).adapter! }));
}
