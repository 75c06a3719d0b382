// safetensors I/O: bit-exact round trips, F16/BF16/F64 decoding against float64 references, format conformance of
// what the writer produces, one error per kind of malformed file, atomic writes, and a seeded fuzz of corrupt files.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { memory, Tensor } from '../lib/index';
import {
  readSafetensors,
  readSafetensorsHeader,
  writeFileAtomic,
  writeFileAtomicWith,
  writeSafetensors,
} from '../lib/io/index';
import { randomTensor } from './helpers';

const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'bidora-safetensors-'));
afterAll(() => fs.rmSync(folder, { recursive: true, force: true }));

let filesMade = 0;
function fileWith(bytes: Uint8Array): string {
  const file = path.join(folder, `case-${filesMade++}.safetensors`);
  fs.writeFileSync(file, bytes);
  return file;
}

/** A file built byte by byte: the length field (the true length unless given), the header, the data buffer. */
function assemble(header: unknown, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): Buffer {
  const headerBytes =
    header instanceof Uint8Array ? header : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const lengthField = Buffer.alloc(8);
  lengthField.writeBigUInt64LE(headerLength ?? BigInt(headerBytes.length));
  return Buffer.concat([lengthField, headerBytes, data]);
}

function bitsOf(values: Float32Array): number[] {
  return Array.from(new Uint32Array(values.buffer, values.byteOffset, values.length));
}

function disposeAll(tensors: Map<string, Tensor>): void {
  for (const tensor of tensors.values()) tensor.dispose();
}

/** mulberry32: small, seeded, the same on every machine. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

// ---- float64 references for the narrow formats ----------------------------------------------------------------

/** A binary float of `exponentBits` and `fractionBits` (plus a sign bit) as a float64, from its definition. */
function decodeBinaryFloat(bits: number, exponentBits: number, fractionBits: number): number {
  const sign = bits & (1 << (exponentBits + fractionBits)) ? -1 : 1;
  const exponent = (bits >> fractionBits) & ((1 << exponentBits) - 1);
  const fraction = bits & ((1 << fractionBits) - 1);
  const bias = 2 ** (exponentBits - 1) - 1;
  if (exponent === 2 ** exponentBits - 1) return fraction === 0 ? sign * Infinity : NaN;
  if (exponent === 0) return sign * fraction * 2 ** (1 - bias - fractionBits); // zero or subnormal
  return sign * (1 + fraction / 2 ** fractionBits) * 2 ** (exponent - bias);
}

const halfToNumber = (bits: number) => decodeBinaryFloat(bits, 5, 10);
const bfloat16ToNumber = (bits: number) => decodeBinaryFloat(bits, 8, 7);

/** Every float32 in `actual` is `expected` rounded to float32: -0 stays -0, NaN stays NaN with its sign. */
function expectFloat32Of(actual: Float32Array, expected: number[], signOfNaN: (index: number) => number): void {
  expect(actual.length).toBe(expected.length);
  const bits = bitsOf(actual);
  const wrong = expected.findIndex((value, index) =>
    Number.isNaN(value)
      ? !Number.isNaN(actual[index]) || bits[index] >>> 31 !== signOfNaN(index)
      : !Object.is(actual[index], Math.fround(value)),
  );
  expect(wrong, `element ${wrong}: ${actual[wrong]} vs ${expected[wrong]}`).toBe(-1);
}

function uint16LittleEndian(patterns: number[]): Buffer {
  const bytes = Buffer.alloc(2 * patterns.length);
  patterns.forEach((pattern, index) => bytes.writeUInt16LE(pattern, 2 * index));
  return bytes;
}

// ---- round trips and conformance ------------------------------------------------------------------------------

describe('writeSafetensors and readSafetensors', () => {
  const specials = [NaN, Infinity, -Infinity, -0, 1e-45, -3.4028234663852886e38, 1.1754942e-38, 0.1];

  it('round-trips tensors of rank 0 to 4, empty ones included, bit for bit, with metadata', () => {
    const baseline = memory().tensors;
    const tensors = new Map([
      ['scalar', randomTensor([])],
      ['empty', randomTensor([0])],
      ['empty.matrix', randomTensor([3, 0])],
      ['vector', randomTensor([5])],
      ['encoder.layer.0.weight', randomTensor([4, 3])],
      ['rank3', randomTensor([2, 3, 4])],
      ['rank4', randomTensor([2, 1, 3, 2])],
      ['specials', Tensor.from(new Float32Array(specials))],
    ]);
    const metadata = { format: 'pt', note: 'ünïcødé ✓ "quoted"', empty: '' };
    const file = path.join(folder, 'round-trip.safetensors');
    writeSafetensors(file, tensors, metadata);
    const read = readSafetensors(file);
    expect([...read.tensors.keys()]).toEqual([...tensors.keys()].sort());
    for (const [name, tensor] of tensors) {
      const copy = read.tensors.get(name) as Tensor;
      expect(copy.shape, name).toEqual(tensor.shape);
      expect(bitsOf(copy.toFloat32Array()), name).toEqual(bitsOf(tensor.toFloat32Array()));
    }
    expect(read.metadata).toEqual(metadata);
    disposeAll(read.tensors);
    disposeAll(tensors);
    expect(memory().tensors).toBe(baseline);
  });

  it('writes a Map and the same object identically, in a file a minimal parser accepts', () => {
    const tensors = { 'b.weight': randomTensor([3, 2]), 'a.bias': randomTensor([3]), z: randomTensor([]) };
    const fromObject = path.join(folder, 'from-object.safetensors');
    const fromMap = path.join(folder, 'from-map.safetensors');
    writeSafetensors(fromObject, tensors, { format: 'pt' });
    writeSafetensors(fromMap, new Map(Object.entries(tensors)), { format: 'pt' });
    const bytes = fs.readFileSync(fromObject);
    expect(fs.readFileSync(fromMap).equals(bytes)).toBe(true);

    // A parser written from the format description alone.
    const headerLength = Number(bytes.readBigUInt64LE(0));
    expect(headerLength % 8).toBe(0);
    const text = bytes.subarray(8, 8 + headerLength).toString('utf8');
    const json = text.trimEnd();
    expect(json.startsWith('{') && json.endsWith('}')).toBe(true);
    expect(text.slice(json.length)).toMatch(/^ {0,7}$/);
    const header = JSON.parse(json) as Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>;
    expect(header.__metadata__).toEqual({ format: 'pt' });
    const data = bytes.subarray(8 + headerLength);
    let offset = 0;
    for (const name of Object.keys(tensors).sort()) {
      const tensor = tensors[name as keyof typeof tensors];
      expect(header[name]).toEqual({
        dtype: 'F32',
        shape: tensor.shape,
        data_offsets: [offset, offset + 4 * tensor.size],
      });
      const values = Array.from({ length: tensor.size }, (_, index) => data.readFloatLE(offset + 4 * index));
      expect(values).toEqual(Array.from(tensor.toFloat32Array()));
      offset += 4 * tensor.size;
    }
    expect(data.length).toBe(offset);
    for (const tensor of Object.values(tensors)) tensor.dispose();
  });

  it('reads every F16 and every BF16 pattern exactly, and F64 rounded to nearest, in file order', () => {
    const patterns = Array.from({ length: 1 << 16 }, (_, index) => index);
    const doubles = [0.1, -0, 1e-50, -1e-50, 1e39, -1e39, 3.4028235677973366e38, 1.401298464324817e-45, NaN, 1 / 3];
    const float64Bytes = Buffer.alloc(8 * doubles.length);
    doubles.forEach((value, index) => float64Bytes.writeDoubleLE(value, 8 * index));
    const halfBytes = uint16LittleEndian(patterns);
    const header = {
      // Listed out of file order on purpose: the reader orders by data offset.
      double: { dtype: 'F64', shape: [2, 5], data_offsets: [2 * halfBytes.length, 2 * halfBytes.length + 80] },
      bfloat16: { dtype: 'BF16', shape: [256, 256], data_offsets: [halfBytes.length, 2 * halfBytes.length] },
      half: { dtype: 'F16', shape: [16, 64, 64], data_offsets: [0, halfBytes.length] },
    };
    const file = fileWith(assemble(header, Buffer.concat([halfBytes, halfBytes, float64Bytes])));
    const { tensors } = readSafetensors(file);
    expect([...tensors.keys()]).toEqual(['half', 'bfloat16', 'double']);
    expect(tensors.get('half')?.shape).toEqual([16, 64, 64]);
    const signBit = (bits: number, width: number) => (bits >> (width - 1)) & 1;
    expectFloat32Of(tensors.get('half')?.toFloat32Array() as Float32Array, patterns.map(halfToNumber), (index) =>
      signBit(patterns[index], 16),
    );
    expectFloat32Of(
      tensors.get('bfloat16')?.toFloat32Array() as Float32Array,
      patterns.map(bfloat16ToNumber),
      (index) => signBit(patterns[index], 16),
    );
    expectFloat32Of(tensors.get('double')?.toFloat32Array() as Float32Array, doubles, () => 0);
    disposeAll(tensors);
  });

  it('reads a file written by the reference implementation (Hugging Face safetensors 0.8.0)', () => {
    const file = path.join(__dirname, 'fixtures', 'safetensors', 'reference.safetensors');
    const header = readSafetensorsHeader(file);
    expect(header.tensors.get('embeddings.position_ids')).toEqual({
      dtype: 'I64',
      shape: [1, 6],
      dataOffsets: [0, 48],
    });
    expect(header.metadata).toEqual({ format: 'np', source: 'safetensors 0.8.0' });
    expect(() => readSafetensors(file)).toThrow(/tensor "embeddings.position_ids" has dtype I64/);
    const { tensors } = readSafetensors(file, { only: (name) => name.startsWith('encoder.') });
    const halves = [0x0000, 0x8000, 0x0001, 0x03ff, 0x8001, 0x0400, 0x3c00, 0xbc00];
    halves.push(0x3555, 0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7e00, 0x1234, 0xc1f0);
    expectFloat32Of(tensors.get('encoder.half')?.toFloat32Array() as Float32Array, halves.map(halfToNumber), () => 0);
    expect(tensors.get('encoder.half')?.shape).toEqual([2, 8]);
    const single = Array.from({ length: 12 }, (_, index) => index * 0.25 - 1.375);
    expect(Array.from(tensors.get('encoder.single')?.toFloat32Array() ?? [])).toEqual(single);
    expectFloat32Of(
      tensors.get('encoder.double')?.toFloat32Array() as Float32Array,
      [1e-50, 0.1, -2.5, 1e39, 3.0000001],
      () => 0,
    );
    expect(tensors.get('encoder.scalar')?.shape).toEqual([]);
    expect(tensors.get('encoder.scalar')?.item()).toBe(-7.75);
    disposeAll(tensors);
  });

  it('accepts what JSON allows: -0 and 2.0 as integers, any name, "__proto__" in names and metadata', () => {
    const json =
      '{"__metadata__":{"__proto__":"kept"},"__proto__":{"dtype":"F32","shape":[-0,2.0],"data_offsets":[0,0]},' +
      '"10":{"dtype":"F32","shape":[1.0],"data_offsets":[0e0,4]},"ünï 9":{"dtype":"F32","shape":[],"data_offsets":[4,8]}}   ';
    const data = Buffer.alloc(8);
    data.writeFloatLE(0.5, 0);
    data.writeFloatLE(-3, 4);
    const { tensors, metadata } = readSafetensors(fileWith(assemble(json, data)));
    expect([...tensors.keys()]).toEqual(['__proto__', '10', 'ünï 9']);
    expect(Object.is(tensors.get('__proto__')?.shape[0], 0)).toBe(true);
    expect(tensors.get('10')?.item()).toBe(0.5);
    expect(tensors.get('ünï 9')?.item()).toBe(-3);
    expect(Object.getPrototypeOf(metadata)).toBe(Object.prototype);
    expect(Object.entries(metadata)).toEqual([['__proto__', 'kept']]);

    // And the writer keeps such names, integer-like ones in name order like the rest.
    const file = path.join(folder, 'odd-names.safetensors');
    writeSafetensors(file, tensors, metadata);
    const again = readSafetensors(file);
    expect([...again.tensors.keys()]).toEqual(['10', '__proto__', 'ünï 9']);
    expect(Object.entries(again.metadata)).toEqual([['__proto__', 'kept']]);
    disposeAll(again.tensors);
    disposeAll(tensors);
  });

  it('reads only what `only` selects, so tensors of other dtypes or ranks can be skipped', () => {
    const header = {
      ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] },
      deep: { dtype: 'F32', shape: [1, 1, 1, 1, 2], data_offsets: [16, 24] },
      kept: { dtype: 'F32', shape: [2], data_offsets: [24, 32] },
    };
    const data = Buffer.alloc(32);
    data.writeFloatLE(1.5, 24);
    data.writeFloatLE(-2, 28);
    const file = fileWith(assemble(header, data));
    expect(() => readSafetensors(file)).toThrow(TypeError);
    expect(() => readSafetensors(file, { only: (name) => name !== 'ids' })).toThrow(RangeError);
    expect(() => readSafetensors(file, { only: (name) => name !== 'ids' })).toThrow(/tensor "deep" has rank 5/);
    expect(() => readSafetensors(file, { only: (_, info) => info.dtype === 'F32' })).toThrow(/"deep" has rank 5/);
    const { tensors } = readSafetensors(file, { only: (_, info) => info.dtype === 'F32' && info.shape.length <= 4 });
    expect([...tensors.keys()]).toEqual(['kept']);
    expect(Array.from(tensors.get('kept')?.toFloat32Array() ?? [])).toEqual([1.5, -2]);
    disposeAll(tensors);
    expect([...readSafetensorsHeader(file).tensors.keys()]).toEqual(['ids', 'deep', 'kept']);
  });

  it('disposes what it read when a later tensor fails, leaving no tensors behind', () => {
    const file = path.join(folder, 'shrinking.safetensors');
    writeSafetensors(file, { a: Tensor.from([1, 2]), b: Tensor.from([3, 4]), c: Tensor.from([5, 6]) });
    const { dataStart, tensors } = readSafetensorsHeader(file);
    const cutInsideC = dataStart + (tensors.get('c')?.dataOffsets[0] ?? 0) + 2;
    const baseline = memory().tensors;
    // A file that shrinks while it is read: a and b read fine, then c's bytes are gone.
    const only = () => {
      if (fs.statSync(file).size > cutInsideC) fs.truncateSync(file, cutInsideC);
      return true;
    };
    expect(() => readSafetensors(file, { only })).toThrow(/tensor "c": the file ended at byte/);
    expect(memory().tensors).toBe(baseline);
    const intact = path.join(__dirname, 'fixtures', 'safetensors', 'reference.safetensors');
    const failingFilter = () => {
      throw new Error('filter failed');
    };
    expect(() => readSafetensors(intact, { only: failingFilter })).toThrow('filter failed');
    expect(memory().tensors).toBe(baseline);
  });
});

// ---- malformed files ------------------------------------------------------------------------------------------

describe('readSafetensors rejects malformed files', () => {
  const entries = {
    'a.weight': { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] },
    'a.bias': { dtype: 'F32', shape: [2], data_offsets: [16, 24] },
  };
  const data = Buffer.alloc(24, 0x3f);
  const withBias = (bias: unknown, dataBytes = 24) => assemble({ ...entries, 'a.bias': bias }, Buffer.alloc(dataBytes));
  const bias = (changes: object) => withBias({ ...entries['a.bias'], ...changes });
  const withoutKey = (key: string) =>
    withBias(Object.fromEntries(Object.entries(entries['a.bias']).filter(([k]) => k !== key)));

  type ErrorClass = typeof Error | typeof TypeError | typeof RangeError;
  const cases: [string, Uint8Array, ErrorClass, RegExp][] = [
    ['an empty file', new Uint8Array(0), RangeError, /0 bytes, too short for the 8-byte header length/],
    ['a file shorter than 8 bytes', new Uint8Array(5), RangeError, /5 bytes, too short/],
    [
      'a header length past the end',
      assemble(entries, data, 1000n),
      RangeError,
      /header length 1000 runs past the end/,
    ],
    ['an absurd header length', assemble(entries, data, 2n ** 63n), RangeError, /above the 100000000-byte limit/],
    ['a header that is not UTF-8', assemble(Buffer.from([0x7b, 0xff, 0x7d])), TypeError, /not valid UTF-8/],
    ['a header that is not JSON', assemble('{"a.weight": {'), TypeError, /not valid JSON/],
    ['a header that is an array', assemble('[]'), TypeError, /must be a JSON object, got array/],
    ['a header that is null', assemble('null'), TypeError, /must be a JSON object, got null/],
    ['an entry that is not an object', withBias(3), TypeError, /tensor "a.bias": the entry must be an object/],
    ['a missing dtype', withoutKey('dtype'), TypeError, /tensor "a.bias": dtype is missing/],
    ['a dtype of the wrong type', bias({ dtype: 4 }), TypeError, /tensor "a.bias": dtype must be a string, got number/],
    ['an unknown dtype', bias({ dtype: 'F7' }), TypeError, /tensor "a.bias": unknown dtype "F7"/],
    ['a missing shape', withoutKey('shape'), TypeError, /tensor "a.bias": shape is missing/],
    ['a shape that is not an array', bias({ shape: '2' }), TypeError, /shape must be an array, got string/],
    ['a non-number dimension', bias({ shape: [1, '2'] }), TypeError, /tensor "a.bias": shape\[1\] must be a number/],
    ['a negative dimension', bias({ shape: [-2] }), RangeError, /shape\[0\] must be a non-negative integer, got -2/],
    [
      'a fractional dimension',
      bias({ shape: [2.5] }),
      RangeError,
      /shape\[0\] must be a non-negative integer, got 2.5/,
    ],
    ['an enormous dimension', bias({ shape: [1e300] }), RangeError, /shape\[0\] must be a non-negative integer/],
    ['missing data_offsets', withoutKey('data_offsets'), TypeError, /tensor "a.bias": data_offsets is missing/],
    ['one data offset', bias({ data_offsets: [16] }), TypeError, /data_offsets must be an array of two numbers/],
    ['a string data offset', bias({ data_offsets: ['16', 24] }), TypeError, /data_offsets must be an array of two/],
    ['a negative data offset', bias({ data_offsets: [-8, 24] }), RangeError, /must be non-negative integers/],
    [
      'reversed data offsets',
      bias({ data_offsets: [24, 16] }),
      RangeError,
      /"a.bias": data_offsets \[24, 16\] are reversed/,
    ],
    [
      'offsets past the data',
      bias({ data_offsets: [24, 32] }),
      RangeError,
      /\[24, 32\] run past the 24-byte data buffer/,
    ],
    [
      'a byte count that is not dtype × shape',
      bias({ shape: [3] }),
      RangeError,
      /hold 8 bytes, but F32 of shape \[3\] takes 12/,
    ],
    [
      'overlapping tensors',
      withBias({ ...entries['a.bias'], data_offsets: [8, 16] }, 16),
      RangeError,
      /"a.bias" at bytes \[8, 16\] overlaps tensor "a.weight"/,
    ],
    [
      'a hole between tensors',
      withBias({ ...entries['a.bias'], data_offsets: [20, 28] }, 28),
      RangeError,
      /bytes \[16, 20\) of the data buffer, before tensor "a.bias", belong to no tensor/,
    ],
    [
      'a hole at the start',
      assemble({ x: { dtype: 'F16', shape: [1], data_offsets: [2, 4] } }, Buffer.alloc(4)),
      RangeError,
      /bytes \[0, 2\)/,
    ],
    [
      'trailing bytes',
      withBias(entries['a.bias'], 32),
      RangeError,
      /bytes \[24, 32\) at the end of the data buffer belong to no tensor/,
    ],
    [
      '__metadata__ not an object',
      assemble({ ...entries, __metadata__: 'pt' }, data),
      TypeError,
      /__metadata__ must be an object, got string/,
    ],
    [
      '__metadata__ an array',
      assemble({ ...entries, __metadata__: ['pt'] }, data),
      TypeError,
      /__metadata__ must be an object, got array/,
    ],
    [
      'a metadata value not a string',
      assemble({ ...entries, __metadata__: { epoch: 3 } }, data),
      TypeError,
      /__metadata__\["epoch"\] must be a string, got number/,
    ],
  ];

  it.each(cases)('%s', (_description, bytes, errorClass, message) => {
    const file = fileWith(bytes);
    for (const read of [() => readSafetensors(file), () => readSafetensorsHeader(file)]) {
      expect(read).toThrow(errorClass);
      expect(read).toThrow(message);
    }
  });

  it('names the tensor whose dtype it cannot convert or whose rank is above 4', () => {
    const ids = fileWith(assemble({ ids: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, Buffer.alloc(8)));
    expect(() => readSafetensors(ids)).toThrow(TypeError);
    expect(() => readSafetensors(ids)).toThrow(/tensor "ids" has dtype I64, which cannot be read as float32/);
    const deep = fileWith(
      assemble({ deep: { dtype: 'F32', shape: [1, 1, 1, 1, 1], data_offsets: [0, 4] } }, data.subarray(0, 4)),
    );
    expect(() => readSafetensors(deep)).toThrow(RangeError);
    expect(() => readSafetensors(deep)).toThrow(
      /tensor "deep" has rank 5 \(shape \[1,1,1,1,1\]\); tensors have rank 0 to 4/,
    );
  });

  it('checks its arguments', () => {
    expect(() => readSafetensors('')).toThrow(TypeError);
    expect(() => readSafetensors(3 as never)).toThrow(/path must be a non-empty string/);
    const file = fileWith(assemble(entries, data));
    const valid = readSafetensors(file).tensors; // the cases above each break this file in one place
    expect([...valid.keys()]).toEqual(['a.weight', 'a.bias']);
    disposeAll(valid);
    expect(() => readSafetensors(file, { only: 'a.bias' as never })).toThrow(
      /options.only must be a function, got string/,
    );
    expect(() => readSafetensors(path.join(folder, 'missing.safetensors'))).toThrow(/ENOENT/);
  });
});

// ---- writing: argument checks and atomicity --------------------------------------------------------------------

describe('writeSafetensors and writeFileAtomic', () => {
  const leftovers = () => fs.readdirSync(folder).filter((name) => name.endsWith('.tmp'));

  it('rejects bad names, values and metadata with a TypeError naming the key, writing nothing', () => {
    const live = Tensor.from([1, 2]);
    const disposed = Tensor.from([3]);
    disposed.dispose();
    const target = path.join(folder, 'never-written.safetensors');
    const cases: [unknown, unknown, RegExp][] = [
      [5, {}, /tensors must be a Map or an object of Tensors, got number/],
      [[live], {}, /tensors must be a Map or an object of Tensors, got array/],
      [{ '': live }, {}, /tensor names must be non-empty strings, got ""/],
      [new Map<unknown, Tensor>([[7, live]]), {}, /tensor names must be non-empty strings, got "7"/],
      [{ __metadata__: live }, {}, /"__metadata__" cannot name a tensor/],
      [{ w: [1, 2] }, {}, /tensors\["w"\] must be a Tensor, got object/],
      [{ w: disposed }, {}, /tensors\["w"\] is a disposed Tensor/],
      [{ w: live }, { epoch: 3 }, /metadata\["epoch"\] must be a string, got number/],
      [{ w: live }, null, /metadata must be an object, got null/],
    ];
    for (const [tensors, metadata, message] of cases) {
      const write = () => writeSafetensors(target, tensors as never, metadata as never);
      expect(write).toThrow(TypeError);
      expect(write).toThrow(message);
    }
    expect(() => writeSafetensors('', { w: live })).toThrow(/path must be a non-empty string/);
    expect(fs.existsSync(target)).toBe(false);
    live.dispose();
  });

  it('replaces a file whole, and leaves it untouched when writing fails midway', () => {
    const target = path.join(folder, 'atomic.bin');
    writeFileAtomic(target, 'first version');
    writeFileAtomic(target, new Uint8Array([1, 2, 3]));
    expect([...fs.readFileSync(target)]).toEqual([1, 2, 3]);
    const failing = () =>
      writeFileAtomicWith(target, (append) => {
        append(new Uint8Array(1000));
        throw new Error('disk full halfway');
      });
    expect(failing).toThrow('disk full halfway');
    expect([...fs.readFileSync(target)]).toEqual([1, 2, 3]);
    expect(leftovers()).toEqual([]);

    let appendLater: ((chunk: Uint8Array) => void) | undefined;
    writeFileAtomicWith(target, (append) => {
      append(Buffer.from('streamed '));
      append(Buffer.from('in parts'));
      appendLater = append;
    });
    expect(fs.readFileSync(target, 'utf8')).toBe('streamed in parts');
    expect(() => appendLater?.(new Uint8Array(1))).toThrow(/append called after/);
    expect(() => writeFileAtomic(path.join(folder, 'no-such-folder', 'x.bin'), 'x')).toThrow(/ENOENT/);
    expect(() => writeFileAtomic(target, 5 as never)).toThrow(TypeError);
    expect(leftovers()).toEqual([]);
  });

  it('overwrites an existing safetensors file with the new tensors', () => {
    const file = path.join(folder, 'overwrite.safetensors');
    const first = Tensor.from([1, 2, 3]);
    const second = Tensor.from([4, 5]);
    writeSafetensors(file, { w: first });
    writeSafetensors(file, { v: second }, { step: '2' });
    const read = readSafetensors(file);
    expect([...read.tensors.keys()]).toEqual(['v']);
    expect(Array.from(read.tensors.get('v')?.toFloat32Array() ?? [])).toEqual([4, 5]);
    expect(read.metadata).toEqual({ step: '2' });
    disposeAll(read.tensors);
    first.dispose();
    second.dispose();
    expect(leftovers()).toEqual([]);
  });
});

// ---- fuzz -----------------------------------------------------------------------------------------------------

describe('readSafetensors on corrupt files (seeded fuzz)', () => {
  const fuzzSeed = Number(process.env.BIDORA_FUZZ_SEED ?? 0x5afe7e45);
  const filesToTry = Number(process.env.BIDORA_FUZZ_FILES ?? 4000);
  const random = seededRandom(fuzzSeed);
  const below = (limit: number) => Math.floor(random() * limit);
  const pick = <T>(items: readonly T[]): T => items[below(items.length)];

  /** A valid file: up to five tensors of the four readable dtypes, random order, random padding and metadata. */
  function validFile(): { bytes: Buffer; headerLength: number } {
    const elementBytes = { F32: 4, F16: 2, BF16: 2, F64: 8 } as const;
    const names = Array.from({ length: below(6) }, (_, index) => `${pick(['w', 'layer.0.bias', 'emb', '0'])}.${index}`);
    const header: Record<string, unknown> = {};
    const chunks: Buffer[] = [];
    let offset = 0;
    for (const name of names) {
      const dtype = pick(['F32', 'F16', 'BF16', 'F64'] as const);
      const shape = Array.from({ length: below(5) }, () => below(4));
      const byteLength = shape.reduce((count, dim) => count * dim, 1) * elementBytes[dtype];
      chunks.push(Buffer.from(Array.from({ length: byteLength }, () => below(256))));
      header[name] = { dtype, shape, data_offsets: [offset, offset + byteLength] };
      offset += byteLength;
    }
    if (random() < 0.5) header.__metadata__ = { format: 'pt', note: String(below(1000)) };
    const shuffled = Object.fromEntries(Object.entries(header).sort(() => random() - 0.5));
    const json = JSON.stringify(shuffled) + ' '.repeat(below(8));
    return { bytes: assemble(json, Buffer.concat(chunks)), headerLength: Buffer.byteLength(json) };
  }

  const numbers = ['-1', '0', '1', '7', '2.5', '1e309', '9007199254740993', '4294967296', '-0', '"3"', 'null'];
  const jsonPieces = ['{', '}', '[', ']', '"', ':', ',', '0', '9', '-', 'e', ' ', '\\', 'F16', 'I64', '\u00e9'];

  /** Edits the JSON text, then (usually) fixes the length field so the edit reaches the JSON checks. */
  function editJson(bytes: Buffer, headerLength: number): Buffer {
    let json = bytes.subarray(8, 8 + headerLength).toString('latin1');
    const at = below(json.length + 1);
    const edit = below(4);
    if (edit === 0) json = json.replace(/-?\d+(\.\d+)?/g, (match) => (random() < 0.2 ? pick(numbers) : match));
    else if (edit === 1) json = json.slice(0, at) + pick(jsonPieces) + json.slice(at + below(2));
    else if (edit === 2) json = json.slice(0, at) + json.slice(at + 1 + below(12));
    else json = json.replace(/"(F32|F16|BF16|F64)"/, `"${pick(['F32', 'F16', 'BF16', 'F64', 'I64', 'F7'])}"`);
    const edited = Buffer.from(json, 'latin1');
    const lengthField = random() < 0.9 ? BigInt(edited.length) : BigInt(headerLength);
    return assemble(edited, bytes.subarray(8 + headerLength), lengthField);
  }

  type ValidFile = { bytes: Buffer; headerLength: number };
  const flipBytes = (bytes: Buffer, from: number) => {
    const flipped = Buffer.from(bytes);
    for (let flips = 1 + below(4); flips > 0 && flipped.length > from; flips--) {
      flipped[from + below(flipped.length - from)] ^= 1 + below(255);
    }
    return flipped;
  };
  const setHeaderLength = ({ bytes, headerLength }: ValidFile) => {
    const lengths = [0n, 1n, 2n ** 63n, 2n ** 64n - 1n, BigInt(bytes.length), BigInt(headerLength + below(17) - 8)];
    const changed = Buffer.from(bytes);
    changed.writeBigUInt64LE(BigInt.asUintN(64, pick(lengths)));
    return changed;
  };
  const garbage = () => Buffer.from(Array.from({ length: 1 + below(64) }, () => below(256)));

  /** Each mutation, and what it must lead to whatever the file: 'parsed', 'rejected', or either. */
  const mutations: [string, (file: ValidFile) => Buffer, 'parsed' | 'rejected' | 'either'][] = [
    ['bytes flipped anywhere', ({ bytes }) => flipBytes(bytes, 0), 'either'],
    ['data bytes flipped', ({ bytes, headerLength }) => flipBytes(bytes, 8 + headerLength), 'parsed'],
    ['header length changed', setHeaderLength, 'either'],
    ['JSON edited', ({ bytes, headerLength }) => editJson(bytes, headerLength), 'either'],
    ['truncated', ({ bytes }) => bytes.subarray(0, below(bytes.length)), 'rejected'],
    ['garbage appended', ({ bytes }) => Buffer.concat([bytes, garbage()]), 'rejected'],
  ];

  /** The outcome of reading `file`: 'parsed' (after checking the tensors against the header) or 'rejected'. */
  function readOutcome(file: string, trial: number): 'parsed' | 'rejected' {
    let tensors: Map<string, Tensor>;
    try {
      tensors = readSafetensors(file).tensors;
    } catch (error) {
      expect(error, `trial ${trial} (seed ${fuzzSeed})`).toBeInstanceOf(Error);
      expect((error as Error).message, `trial ${trial} (seed ${fuzzSeed})`).toMatch(/^readSafetensors: /);
      return 'rejected';
    }
    const header = readSafetensorsHeader(file);
    for (const [name, tensor] of tensors) {
      expect(tensor.shape).toEqual(header.tensors.get(name)?.shape);
      expect(tensor.toFloat32Array().length).toBe(tensor.size);
    }
    disposeAll(tensors);
    return 'parsed';
  }

  it(`each of ${filesToTry} mutated files is read or rejected with an Error that says where, quickly`, () => {
    const baseline = memory().tensors;
    const file = path.join(folder, 'fuzz.safetensors');
    const tally = new Map(mutations.map(([name]) => [name, { parsed: 0, rejected: 0 }]));
    let slowest = 0;
    for (let trial = 0; trial < filesToTry; trial++) {
      const [name, mutation, expected] = pick(mutations);
      fs.writeFileSync(file, mutation(validFile()));
      const started = performance.now();
      const outcome = readOutcome(file, trial);
      slowest = Math.max(slowest, performance.now() - started);
      if (expected !== 'either') expect(outcome, `trial ${trial} (seed ${fuzzSeed}): ${name}`).toBe(expected);
      (tally.get(name) as { parsed: number; rejected: number })[outcome]++;
    }
    const total = (outcome: 'parsed' | 'rejected') =>
      [...tally.values()].reduce((sum, counts) => sum + counts[outcome], 0);
    console.log(
      `safetensors fuzz, seed ${fuzzSeed}: ${filesToTry} files, ${total('parsed')} parsed, ${total('rejected')} ` +
        `rejected, slowest read ${slowest.toFixed(1)} ms\n${JSON.stringify(Object.fromEntries(tally), null, 1)}`,
    );
    expect(total('rejected')).toBeGreaterThan(filesToTry / 2);
    expect(slowest).toBeLessThan(500);
    expect(memory().tensors).toBe(baseline);
  });
});
