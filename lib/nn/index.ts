// Layers as plain classes with named parameters.
export {
  Dropout,
  Embedding,
  GELU,
  GELUTanh,
  type InitOptions,
  type Layer,
  LayerNorm,
  Linear,
  LinearAdapter,
  MLP,
  ReLU,
  RMSNorm,
  Sequential,
  SiLU,
  Tanh,
} from './layers';
export { SeedStream } from '../random';
export { Module } from './module';
export {
  Attention,
  type EncoderConfig,
  Intermediate,
  MultiHeadSelfAttention,
  ResidualOutput,
  TransformerEncoderLayer,
} from './transformer';
