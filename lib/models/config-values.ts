// Reading one value of a Hugging Face config.json: checks that name the key and show what the file held, shared by
// the encoder and decoder parsers.

/** A config value for the messages: it came from a file and may be anything. */
export function shown(value: unknown): string {
  const json = JSON.stringify(value) ?? String(value);
  return json.length > 80 ? `${json.slice(0, 80)}...` : json;
}

/** A key's value, with null read as absent (transformers writes null for "not set"). */
export function valueOf(config: Record<string, unknown>, key: string): unknown {
  const value = config[key];
  return value === null ? undefined : value;
}

/** An integer in [1, limit]; `fallback` when the key is absent (required when there is none). */
export function boundedSize(config: Record<string, unknown>, key: string, limit: number, fallback?: number): number {
  const value = valueOf(config, key) ?? fallback;
  if (typeof value !== 'number') {
    throw new TypeError(`config.json: ${key} must be an integer in [1, ${limit}], got ${shown(value)}`);
  }
  if (!Number.isInteger(value) || value < 1 || value > limit) {
    throw new RangeError(`config.json: ${key} must be an integer in [1, ${limit}], got ${shown(value)}`);
  }
  return value;
}

export function probability(config: Record<string, unknown>, key: string, fallback: number): number {
  const value = valueOf(config, key) ?? fallback;
  if (typeof value !== 'number') {
    throw new TypeError(`config.json: ${key} must be a probability in [0, 1), got ${shown(value)}`);
  }
  if (!(value >= 0 && value < 1)) {
    throw new RangeError(`config.json: ${key} must be a probability in [0, 1), got ${shown(value)}`);
  }
  return value;
}

export function finiteNumber(
  config: Record<string, unknown>,
  key: string,
  fallback: number,
  valid: (value: number) => boolean,
  expected: string,
): number {
  const value = valueOf(config, key) ?? fallback;
  if (typeof value !== 'number') throw new TypeError(`config.json: ${key} must be ${expected}, got ${shown(value)}`);
  if (!Number.isFinite(value) || !valid(value)) {
    throw new RangeError(`config.json: ${key} must be ${expected}, got ${shown(value)}`);
  }
  return value;
}

export function choice<T extends string>(
  config: Record<string, unknown>,
  key: string,
  fallback: T,
  allowed: readonly T[],
): T {
  const value = valueOf(config, key) ?? fallback;
  const expected = allowed.map((item) => `'${item}'`).join(' or ');
  if (typeof value !== 'string') throw new TypeError(`config.json: ${key} must be ${expected}, got ${shown(value)}`);
  if (!allowed.includes(value as T)) {
    throw new RangeError(`config.json: ${key} ${shown(value)} is not supported (expected ${expected})`);
  }
  return value as T;
}

export function flag(config: Record<string, unknown>, key: string, fallback: boolean): boolean {
  const value = valueOf(config, key) ?? fallback;
  if (typeof value !== 'boolean') throw new TypeError(`config.json: ${key} must be true or false, got ${shown(value)}`);
  return value;
}

/** A token id in [0, vocabSize), or undefined when absent. */
export function tokenId(config: Record<string, unknown>, key: string, vocabSize: number): number | undefined {
  const value = valueOf(config, key);
  if (value === undefined) return undefined;
  if (typeof value !== 'number') throw new TypeError(`config.json: ${key} must be a token id, got ${shown(value)}`);
  if (!Number.isInteger(value) || value < 0 || value >= vocabSize) {
    throw new RangeError(`config.json: ${key} must be a token id in [0, ${vocabSize}), got ${value}`);
  }
  return value;
}
