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
import { type EncoderFamily, type EncoderModelConfig, type EncoderTask } from './config';
import { DistilBertForSequenceClassification, DistilBertForTokenClassification, DistilBertModel } from './distilbert';
import { type EncoderTaskModel } from './encoder';
import { EsmForSequenceClassification, EsmForTokenClassification, EsmModel } from './esm';

type ModelClass = new (config: EncoderModelConfig, options?: { seed?: number }) => EncoderTaskModel;

const ROBERTA_LAYOUT: Record<EncoderTask, ModelClass> = {
  'sequence-classification': RobertaForSequenceClassification,
  'token-classification': RobertaForTokenClassification,
  base: RobertaModel,
};

export const MODEL_CLASSES: Record<EncoderFamily, Record<EncoderTask, ModelClass>> = {
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

/** The model `config` describes, freshly initialised from `seed`. */
export function buildModel(config: EncoderModelConfig, options: { seed?: number } = {}): EncoderTaskModel {
  return new MODEL_CLASSES[config.modelType][config.task](config, options);
}
