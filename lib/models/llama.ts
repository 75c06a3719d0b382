// The Llama family (transformers' LlamaForCausalLM and Qwen2ForCausalLM) with Hugging Face's parameter names
// (model.embed_tokens.weight, model.layers.0.self_attn.q_proj.weight, ...): RMSNorm before each block, rotary
// position embeddings on queries and keys with the config's rope_theta, grouped-query attention (num_key_value_heads
// heads of keys and values shared by the query heads), and the SwiGLU MLP down(silu(gate(x)) ⊙ up(x)). Qwen2 is the
// same layout with biases on the query, key and value projections.
import { swiglu } from '../ops/activation';
import { add } from '../ops/elementwise';
import { rotary } from '../ops/rotary';
import { mergeHeads, splitHeads } from '../ops/shape';
import { type Tensor } from '../tensor';
import { Dropout, Embedding, Linear, RMSNorm } from '../nn/layers';
import { Module } from '../nn/module';
import { SeedScope } from '../random';
import { type DecoderModelConfig } from './decoder-config';
import { CausalLM, causalAttention, type DecoderPass, languageModelHead, projectToVocabulary } from './decoder';

function projection(inFeatures: number, outFeatures: number, bias: boolean, config: DecoderModelConfig, seed: number) {
  return new Linear(inFeatures, outFeatures, { bias, std: config.initializerRange, seed });
}

/** Causal grouped-query self-attention with rotary position embeddings (base rope_theta) on queries and keys. */
export class LlamaAttention extends Module {
  /** [hidden] → [heads · headDim]; with a bias in Qwen2 (attention_bias). */
  q_proj: Linear;
  /** [hidden] → [kvHeads · headDim]: num_key_value_heads heads, each shared by heads / kvHeads query heads. */
  k_proj: Linear;
  /** [hidden] → [kvHeads · headDim]. */
  v_proj: Linear;
  /** The output projection, [heads · headDim] → [hidden]. */
  o_proj: Linear;
  /** Dropout on the attention probabilities (attention_dropout, 0 in released checkpoints). */
  attention_dropout: Dropout;

  constructor(
    /** The parsed config it was built from. */
    readonly config: DecoderModelConfig,
    /** The layer's index from 0: its slot in the key/value cache. */
    readonly layerIndex: number,
    seeds: SeedScope,
  ) {
    super();
    const { hiddenSize, numHeads, numKeyValueHeads, headDim, qkvBias, outputBias } = config;
    this.q_proj = projection(hiddenSize, numHeads * headDim, qkvBias, config, seeds.seed('q_proj.weight'));
    this.k_proj = projection(hiddenSize, numKeyValueHeads * headDim, qkvBias, config, seeds.seed('k_proj.weight'));
    this.v_proj = projection(hiddenSize, numKeyValueHeads * headDim, qkvBias, config, seeds.seed('v_proj.weight'));
    this.o_proj = projection(numHeads * headDim, hiddenSize, outputBias, config, seeds.seed('o_proj.weight'));
    this.attention_dropout = new Dropout(config.attentionDropout, seeds.seed('attention_dropout'));
  }

  /** [batch, seq, hidden] → [batch, seq, hidden], attending over the cached keys too when the pass has a cache. */
  forward(hidden: Tensor, pass: DecoderPass): Tensor {
    const { numHeads, numKeyValueHeads, headDim, ropeTheta } = this.config;
    const turn = (x: Tensor) => rotary(x, { base: ropeTheta, positions: pass.positions });
    const query = turn(splitHeads(this.q_proj.forward(hidden), numHeads));
    const key = turn(splitHeads(this.k_proj.forward(hidden), numKeyValueHeads));
    const value = splitHeads(this.v_proj.forward(hidden), numKeyValueHeads);
    const attended = causalAttention(query, key, value, pass, this.layerIndex, {
      scale: 1 / Math.sqrt(headDim),
      dropout: this.attention_dropout,
    });
    return this.o_proj.forward(mergeHeads(attended));
  }
}

/** The SwiGLU feed-forward layer: down(silu(gate(x)) ⊙ up(x)). */
export class LlamaMLP extends Module {
  /** [hidden] → [intermediate], through SiLU. */
  gate_proj: Linear;
  /** [hidden] → [intermediate], multiplied by the gate. */
  up_proj: Linear;
  /** [intermediate] → [hidden]. */
  down_proj: Linear;

  constructor(config: DecoderModelConfig, seeds: SeedScope) {
    super();
    const { hiddenSize, intermediateSize, mlpBias } = config;
    this.gate_proj = projection(hiddenSize, intermediateSize, mlpBias, config, seeds.seed('gate_proj.weight'));
    this.up_proj = projection(hiddenSize, intermediateSize, mlpBias, config, seeds.seed('up_proj.weight'));
    this.down_proj = projection(intermediateSize, hiddenSize, mlpBias, config, seeds.seed('down_proj.weight'));
  }

  /** [batch, seq, hidden] → [batch, seq, hidden]. */
  forward(hidden: Tensor): Tensor {
    return this.down_proj.forward(swiglu(this.gate_proj.forward(hidden), this.up_proj.forward(hidden)));
  }
}

/** x + attention(RMSNorm(x)), then y + MLP(RMSNorm(y)). */
export class LlamaDecoderLayer extends Module {
  /** Causal self-attention. */
  self_attn: LlamaAttention;
  /** The SwiGLU feed-forward layer. */
  mlp: LlamaMLP;
  /** RMSNorm before attention. */
  input_layernorm: RMSNorm;
  /** RMSNorm before the feed-forward layer. */
  post_attention_layernorm: RMSNorm;

  constructor(config: DecoderModelConfig, layerIndex: number, seeds: SeedScope) {
    super();
    this.self_attn = new LlamaAttention(config, layerIndex, seeds.child('self_attn'));
    this.mlp = new LlamaMLP(config, seeds.child('mlp'));
    this.input_layernorm = new RMSNorm(config.hiddenSize, config.normEps);
    this.post_attention_layernorm = new RMSNorm(config.hiddenSize, config.normEps);
  }

  /** [batch, seq, hidden] → [batch, seq, hidden]. */
  forward(hidden: Tensor, pass: DecoderPass): Tensor {
    const attended = add(hidden, this.self_attn.forward(this.input_layernorm.forward(hidden), pass));
    return add(attended, this.mlp.forward(this.post_attention_layernorm.forward(attended)));
  }
}

/** `model.*`: token embeddings, the layers, the final RMSNorm. */
export class LlamaModel extends Module {
  /** Token embeddings, [vocab, hidden]; also the output projection when the head is tied. */
  embed_tokens: Embedding;
  /** The layers, in order (`layers.0`, `layers.1`, ...). */
  layers: LlamaDecoderLayer[];
  /** The final RMSNorm. */
  norm: RMSNorm;

  constructor(config: DecoderModelConfig, seeds: SeedScope) {
    super();
    this.embed_tokens = new Embedding(config.vocabSize, config.hiddenSize, {
      std: config.initializerRange,
      seed: seeds.seed('embed_tokens.weight'),
    });
    this.layers = Array.from(
      { length: config.numLayers },
      (_, index) => new LlamaDecoderLayer(config, index, seeds.child(`layers.${index}`)),
    );
    this.norm = new RMSNorm(config.hiddenSize, config.normEps);
  }

  /** The last hidden states [batch, seq, hidden] of a pass, after the final RMSNorm. */
  forward(pass: DecoderPass): Tensor {
    const embedded = this.embed_tokens.forward(pass.ids.data, [pass.ids.batch, pass.ids.seq]);
    return this.norm.forward(this.layers.reduce((value, layer) => layer.forward(value, pass), embedded));
  }
}

/** transformers' LlamaForCausalLM: the decoder and lm_head (the token embeddings when tie_word_embeddings). */
export class LlamaForCausalLM extends CausalLM {
  readonly basePrefix = 'model';
  /** The decoder: embeddings, layers and the final RMSNorm. */
  model: LlamaModel;
  /** [hidden] → [vocab] without bias; undefined when tied to `model.embed_tokens` (tie_word_embeddings). */
  lm_head: Linear | undefined;

  constructor(
    /** The parsed config it was built from. */
    readonly config: DecoderModelConfig,
    options: { seed?: number } = {},
  ) {
    super();
    const seeds = new SeedScope(options.seed ?? 0);
    this.model = new LlamaModel(config, seeds.child('model'));
    this.lm_head = languageModelHead(config, seeds.seed('lm_head.weight'));
    this.initGenerationConfig();
  }

  protected hiddenStates(pass: DecoderPass): Tensor {
    return this.model.forward(pass);
  }

  protected outputProjection(hidden: Tensor): Tensor {
    return projectToVocabulary(hidden, this.lm_head, this.model.embed_tokens.weight);
  }
}

/** transformers' Qwen2ForCausalLM: Llama's layout with query, key and value biases (the config says so). */
export class Qwen2ForCausalLM extends LlamaForCausalLM {}
