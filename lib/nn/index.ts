// Layers as plain classes with named parameters.
export {
  Dropout,
  Embedding,
  GELU,
  type InitOptions,
  type Layer,
  LayerNorm,
  Linear,
  LinearAdapter,
  MLP,
  ReLU,
  Sequential,
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
