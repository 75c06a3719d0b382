// Adapters in PEFT's terms: attach LoRA, DoRA or BiDoRA by module name, save and load PEFT adapter folders, merge
// into the base weights, and analyse how training decomposed into magnitude and direction.
export {
  type AdapterConfig,
  type AdapterMethod,
  apply,
  appliedConfig,
  type NamedTensor,
  type ParameterGroups,
} from './apply';
export { analyze, type DecompositionAnalysis, type LayerDecomposition, slope } from './analyze';
export { type AdaptedLayer, adaptedLayers } from './layers';
export { merge, unmerge } from './merge';
export {
  type AdapterForwardArgs,
  type AdapterLayerKind,
  ADAPTER_METHOD_NAMES,
  ADAPTER_METHODS,
  type AdapterMethodSpec,
  type AdapterState,
  checkAdapterMethod,
} from './methods';
export {
  ADAPTER_CONFIG_FILE,
  ADAPTER_WEIGHTS_FILE,
  load,
  type PeftAdapterConfig,
  save,
  type SaveOptions,
  trainableParameters,
} from './peft';
