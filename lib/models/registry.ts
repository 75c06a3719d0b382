// Which class builds which (family, task): the one table models.fromConfig and models.load consult. A new family
// adds its module and a row here.
import {
  BertForSequenceClassification,
  BertForTokenClassification,
  BertModel,
  RobertaForSequenceClassification,
  RobertaForTokenClassification,
  RobertaModel,
} from './bert';
import { type EncoderFamily, type EncoderModelConfig, type EncoderTask, type ModelConfig } from './config';
import { type CausalLM } from './decoder';
import { type DecoderFamily, type DecoderModelConfig } from './decoder-config';
import { DistilBertForSequenceClassification, DistilBertForTokenClassification, DistilBertModel } from './distilbert';
import { type EncoderTaskModel } from './encoder';
import { EsmForSequenceClassification, EsmForTokenClassification, EsmModel } from './esm';
import { GPT2LMHeadModel } from './gpt2';
import { LlamaForCausalLM, Qwen2ForCausalLM } from './llama';

/** Any model the registry builds: an encoder with its task's head, or a causal language model. */
export type PretrainedModel = EncoderTaskModel | CausalLM;

/** An encoder model class: built from a parsed config, its weights seeded by `options.seed` (default 0). */
export type EncoderModelClass = new (config: EncoderModelConfig, options?: { seed?: number }) => EncoderTaskModel;

const ROBERTA_LAYOUT: Record<EncoderTask, EncoderModelClass> = {
  'sequence-classification': RobertaForSequenceClassification,
  'token-classification': RobertaForTokenClassification,
  base: RobertaModel,
};

/** The encoder class of each family and task: what `models.fromConfig` and `models.load` build. */
export const MODEL_CLASSES: Record<EncoderFamily, Record<EncoderTask, EncoderModelClass>> = {
  bert: {
    'sequence-classification': BertForSequenceClassification,
    'token-classification': BertForTokenClassification,
    base: BertModel,
  },
  roberta: ROBERTA_LAYOUT,
  // XLM-RoBERTa and CamemBERT are RoBERTa's layout under their own names.
  'xlm-roberta': ROBERTA_LAYOUT,
  camembert: ROBERTA_LAYOUT,
  distilbert: {
    'sequence-classification': DistilBertForSequenceClassification,
    'token-classification': DistilBertForTokenClassification,
    base: DistilBertModel,
  },
  esm: {
    'sequence-classification': EsmForSequenceClassification,
    'token-classification': EsmForTokenClassification,
    base: EsmModel,
  },
};

/** The causal language model class of each decoder family. */
export const DECODER_CLASSES: Record<
  DecoderFamily,
  new (config: DecoderModelConfig, options?: { seed?: number }) => CausalLM
> = {
  gpt2: GPT2LMHeadModel,
  llama: LlamaForCausalLM,
  qwen2: Qwen2ForCausalLM,
};

/** The model `config` describes, freshly initialised from `seed`. */
export function buildModel(config: EncoderModelConfig, options?: { seed?: number }): EncoderTaskModel;
export function buildModel(config: DecoderModelConfig, options?: { seed?: number }): CausalLM;
export function buildModel(config: ModelConfig, options?: { seed?: number }): PretrainedModel;
export function buildModel(config: ModelConfig, options: { seed?: number } = {}): PretrainedModel {
  if (config.task === 'causal-lm') return new DECODER_CLASSES[config.modelType](config, options);
  return new MODEL_CLASSES[config.modelType][config.task](config, options);
}
