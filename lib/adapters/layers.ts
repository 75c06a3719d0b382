// Finding the adapted layers of a model.
import { Linear, type LinearAdapter } from '../nn/layers';
import { type Module } from '../nn/module';

export interface AdaptedLayer {
  /** The Linear layer's dotted module path, e.g. bert.encoder.layer.0.attention.self.query. */
  path: string;
  layer: Linear;
  adapter: LinearAdapter;
}

export function adaptedLayers(model: Module): AdaptedLayer[] {
  return model
    .namedModules()
    .filter(([, module]) => module instanceof Linear && module.adapter !== undefined)
    .map(([path, module]) => ({ path, layer: module as Linear, adapter: (module as Linear).adapter! }));
}
