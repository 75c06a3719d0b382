// Adapters in PEFT's terms: attach LoRA, DoRA or BiDoRA to a model's Linear layers by name.
export { type AdapterConfig, type AdapterMethod, apply, type NamedTensor, type ParameterGroups } from './apply';
