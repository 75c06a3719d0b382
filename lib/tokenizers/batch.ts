// What every tokenizer returns for a batch: padded [batch, seq] id matrices ready for a model's forward.

export interface EncodedBatch {
  inputIds: { data: Int32Array; shape: [number, number] };
  attentionMask: { data: Int32Array; shape: [number, number] };
  tokenTypeIds: { data: Int32Array; shape: [number, number] };
}

export interface EncodeOptions {
  /** Second texts (sentence pairs), one per text. */
  pairs?: readonly string[];
  /** Longest sequence kept, special tokens included (default 512). */
  maxLength?: number;
  /** 'longest' pads to the longest sequence in the batch (default); 'max_length' pads to maxLength. */
  padding?: 'longest' | 'max_length';
}

export interface Tokenizer {
  readonly vocabSize: number;
  readonly padTokenId: number;
  encodeBatch(texts: readonly string[], options?: EncodeOptions): EncodedBatch;
}

export interface Encoded {
  ids: number[];
  typeIds: number[];
}

/** Pads encoded sequences into one batch (attention mask 0 over padding). */
export function padBatch(sequences: readonly Encoded[], padId: number, length: number): EncodedBatch {
  const batch = sequences.length;
  const inputIds = new Int32Array(batch * length).fill(padId);
  const attentionMask = new Int32Array(batch * length);
  const tokenTypeIds = new Int32Array(batch * length);
  sequences.forEach((sequence, row) => {
    sequence.ids.forEach((id, column) => {
      inputIds[row * length + column] = id;
      attentionMask[row * length + column] = 1;
      tokenTypeIds[row * length + column] = sequence.typeIds[column] ?? 0;
    });
  });
  const shape: [number, number] = [batch, length];
  return {
    inputIds: { data: inputIds, shape },
    attentionMask: { data: attentionMask, shape },
    tokenTypeIds: { data: tokenTypeIds, shape },
  };
}

export function checkTexts(texts: readonly string[], options: EncodeOptions): void {
  if (!Array.isArray(texts) || texts.some((text) => typeof text !== 'string')) {
    throw new TypeError('encodeBatch: texts must be an array of strings');
  }
  if (options.pairs !== undefined && (!Array.isArray(options.pairs) || options.pairs.length !== texts.length)) {
    throw new RangeError(`encodeBatch: pairs must have one text per text (${texts.length})`);
  }
  const maxLength = options.maxLength ?? 512;
  if (!Number.isInteger(maxLength) || maxLength < 2) {
    throw new RangeError(`encodeBatch: maxLength must be an integer of at least 2, got ${maxLength}`);
  }
}
