// Reads and writes safetensors files (Hugging Face's tensor format) as float32 Tensors, validating every header.
//
// Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data buffer. The JSON maps each
// tensor name to { dtype, shape, data_offsets: [begin, end) relative to the data buffer } and may hold a
// "__metadata__" map of strings. The tensors must cover the data buffer exactly: no overlaps, no holes.
import * as fs from 'node:fs';

import { handleOf, Tensor } from '../tensor';
import { writeFileAtomicWith } from './atomic';

/** What the header says about one tensor. */
export interface SafetensorsTensorInfo {
  /** As written in the file: 'F32', 'F16', 'BF16', 'I64', ... */
  readonly dtype: string;
  /** Dimensions, outermost first ([] for a scalar). */
  readonly shape: readonly number[];
  /** [begin, end) in bytes, relative to the start of the data buffer. */
  readonly dataOffsets: readonly [number, number];
}

/** A parsed and validated header. */
export interface SafetensorsHeader {
  /** Every tensor in the file, in file order (by data offset). */
  tensors: Map<string, SafetensorsTensorInfo>;
  /** The `__metadata__` map; empty when the file has none. */
  metadata: Record<string, string>;
  /** Byte position of the data buffer in the file: 8 + the header length. */
  dataStart: number;
}

/** Decides from a tensor's name and header entry whether `readSafetensors` reads it (true) or skips it. */
export type TensorFilter = (name: string, info: SafetensorsTensorInfo) => boolean;

/** Which tensors `readSafetensors` reads and what it checks of them. */
export interface ReadSafetensorsOptions {
  /**
   * Reads only the tensors that pass (by name, or by what the header says of them, e.g. skip non-float dtypes such as
   * an I64 `position_ids`); the rest may have any dtype or rank and are never read.
   */
  only?: TensorFilter;
  /**
   * Refuses, with a RangeError naming the tensor and the first bad element, any tensor holding NaN or ±Infinity
   * (after conversion to float32, so an F64 too large for float32 counts): such weights only ever produce NaN outputs.
   */
  requireFinite?: boolean;
  /**
   * The tensors to return as bfloat16 (frozen weights kept in half the memory): a BF16 tensor's bits are taken as
   * they are, never widened to float32 on the way; one of another dtype is read as float32 and rounded (nearest even).
   */
  bfloat16?: TensorFilter;
}

/** Bytes per element of each dtype the format defines, so any file's offsets can be checked. */
const BYTES_PER_ELEMENT = new Map<string, number>([
  ['BOOL', 1],
  ['U8', 1],
  ['I8', 1],
  ['F8_E4M3', 1],
  ['F8_E5M2', 1],
  ['F8_E8M0', 1],
  ['I16', 2],
  ['U16', 2],
  ['F16', 2],
  ['BF16', 2],
  ['I32', 4],
  ['U32', 4],
  ['F32', 4],
  ['I64', 8],
  ['U64', 8],
  ['F64', 8],
  ['C64', 8],
]);

/** The dtypes converted to float32 on reading. */
const READABLE_DTYPES = ['F32', 'F16', 'BF16', 'F64'];

/** The reference implementation's limit: a longer header means a corrupt length field, not a real header. */
const MAX_HEADER_BYTES = 100_000_000;

/** `readSync` takes at most 2^31 - 1 bytes per call. */
const MAX_READ_BYTES = 1 << 30;

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

// ---- reading ----------------------------------------------------------------------------------------------------

/**
 * Reads the tensors of a safetensors file as float32 Tensors (F16, BF16 and F64 converted), in file order, with the
 * file's metadata; `options.only` picks which, and `options.bfloat16` which come back as bfloat16 instead. Reads one tensor at a time, so memory beyond the result stays at one
 * tensor's bytes. Throws a TypeError or RangeError naming the tensor for any malformed file, for a selected tensor
 * of another dtype, and for a selected tensor of rank above 4; what was read before an error is disposed.
 */
export function readSafetensors(
  path: string,
  options: ReadSafetensorsOptions = {},
): {
  /** The tensors read, as float32 CPU tensors the caller owns, in file order. */
  tensors: Map<string, Tensor>;
  /** The `__metadata__` map; empty when the file has none. */
  metadata: Record<string, string>;
} {
  const where = `readSafetensors: ${checkPath(path, 'readSafetensors')}`;
  const only = checkOnly(options, where);
  const requireFinite = checkRequireFinite(options, where);
  const inBfloat16 = checkFilter(options.bfloat16, `${where}: options.bfloat16`);
  return withFileOpen(path, where, (fd) => {
    const header = readHeader(fd, where);
    const selected = selectTensors(header.tensors, only, where);
    const tensors = new Map<string, Tensor>();
    try {
      for (const [name, info] of selected) {
        const what = `${where}: tensor ${quote(name)}`;
        const bfloat16 = inBfloat16?.(name, info) === true;
        if (bfloat16 && info.dtype === 'BF16') {
          const bits = readBfloat16Bits(fd, header.dataStart, info, what);
          if (requireFinite) checkFiniteBits(bits, info.shape, what);
          tensors.set(name, tensorFrom(bits, info.shape, what));
          continue;
        }
        const values = readValues(fd, header.dataStart, name, info, where);
        if (requireFinite) checkFinite(values, info.shape, what);
        const tensor = tensorFrom(values, info.shape, what);
        tensors.set(name, bfloat16 ? rounded(tensor) : tensor);
      }
    } catch (error) {
      for (const tensor of tensors.values()) tensor.dispose();
      throw error;
    }
    return { tensors, metadata: header.metadata };
  });
}

/** Reads and validates the header of a safetensors file without reading any tensor data. */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  const where = `readSafetensorsHeader: ${checkPath(path, 'readSafetensorsHeader')}`;
  return withFileOpen(path, where, (fd) => readHeader(fd, where));
}

function checkPath(path: unknown, functionName: string): string {
  if (typeof path !== 'string' || path === '') throw new TypeError(`${functionName}: path must be a non-empty string`);
  return path;
}

function checkOnly(options: unknown, where: string): TensorFilter | undefined {
  if (options === null || typeof options !== 'object') throw new TypeError(`${where}: options must be an object`);
  const only: unknown = (options as ReadSafetensorsOptions).only;
  if (only !== undefined && typeof only !== 'function') {
    throw new TypeError(`${where}: options.only must be a function, got ${kindOf(only)}`);
  }
  return only as TensorFilter | undefined;
}

function checkFilter(filter: unknown, what: string): TensorFilter | undefined {
  if (filter !== undefined && typeof filter !== 'function') {
    throw new TypeError(`${what} must be a function, got ${kindOf(filter)}`);
  }
  return filter as TensorFilter | undefined;
}

function checkRequireFinite(options: ReadSafetensorsOptions, where: string): boolean {
  const requireFinite: unknown = options.requireFinite ?? false;
  if (typeof requireFinite !== 'boolean') {
    throw new TypeError(`${where}: options.requireFinite must be a boolean, got ${kindOf(requireFinite)}`);
  }
  return requireFinite;
}

/**
 * Runs `use` on the open file. Errors that do not already name the file (the system's, or a stack overflow on a
 * pathological header) are rethrown with `where` in front, keeping their class, so every failure says which file.
 */
function withFileOpen<T>(path: string, where: string, use: (fd: number) => T): T {
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (error) {
    throw withLocation(error, where);
  }
  try {
    return use(fd);
  } catch (error) {
    throw withLocation(error, where);
  } finally {
    fs.closeSync(fd);
  }
}

function withLocation(error: unknown, where: string): unknown {
  if (!(error instanceof Error) || error.message.startsWith(where)) return error;
  const located =
    error instanceof RangeError
      ? new RangeError(`${where}: ${error.message}`, { cause: error })
      : error instanceof TypeError
        ? new TypeError(`${where}: ${error.message}`, { cause: error })
        : new Error(`${where}: ${error.message}`, { cause: error });
  const code = (error as NodeJS.ErrnoException).code;
  if (code !== undefined) Object.assign(located, { code });
  return located;
}

/** The same test on bfloat16 bits: an all-ones exponent is ±Infinity or NaN. */
function checkFiniteBits(bits: Uint16Array, shape: readonly number[], what: string): void {
  for (let index = 0; index < bits.length; index++) {
    if ((bits[index] & 0x7f80) === 0x7f80) {
      const value = bits[index] & 0x7f ? NaN : bits[index] & 0x8000 ? -Infinity : Infinity;
      throw new RangeError(
        `${what}: element ${index} (of shape [${shape.join(', ')}]) is ${value}; the tensor must hold finite values`,
      );
    }
  }
}

function checkFinite(values: Float32Array, shape: readonly number[], what: string): void {
  for (let index = 0; index < values.length; index++) {
    const value = values[index];
    // value - value is 0 for every finite value and NaN for NaN and ±Infinity.
    if (value - value !== 0) {
      throw new RangeError(
        `${what}: element ${index} (of shape [${shape.join(', ')}]) is ${value}; the tensor must hold finite values`,
      );
    }
  }
}

function readHeader(fd: number, where: string): SafetensorsHeader {
  const fileSize = fs.fstatSync(fd).size;
  if (fileSize < 8) {
    throw new RangeError(`${where}: the file is ${fileSize} bytes, too short for the 8-byte header length`);
  }
  const lengthField = readBytes(fd, 0, 8, where);
  const headerLength = new DataView(lengthField.buffer).getBigUint64(0, true);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw new RangeError(`${where}: header length ${headerLength} is above the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const dataStart = 8 + Number(headerLength);
  if (dataStart > fileSize) {
    throw new RangeError(`${where}: header length ${headerLength} runs past the end of the ${fileSize}-byte file`);
  }
  const parsed = parseJson(readBytes(fd, 8, dataStart - 8, where), where);
  return validateHeader(parsed, fileSize - dataStart, dataStart, where);
}

function parseJson(bytes: Uint8Array, where: string): unknown {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch (error) {
    throw new TypeError(`${where}: the header is not valid UTF-8`, { cause: error });
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new TypeError(`${where}: the header is not valid JSON (${(error as Error).message})`, { cause: error });
  }
}

// ---- header validation ------------------------------------------------------------------------------------------

function validateHeader(parsed: unknown, dataLength: number, dataStart: number, where: string): SafetensorsHeader {
  if (!isPlainObject(parsed)) throw new TypeError(`${where}: the header must be a JSON object, got ${kindOf(parsed)}`);
  let metadata: Record<string, string> = {};
  const entries: [string, SafetensorsTensorInfo][] = [];
  for (const [name, value] of Object.entries(parsed)) {
    if (name === '__metadata__') metadata = validateMetadata(value, where);
    else entries.push([name, validateEntry(value, dataLength, `${where}: tensor ${quote(name)}`)]);
  }
  const inFileOrder = entries.sort(
    ([, a], [, b]) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1],
  );
  checkCoverage(inFileOrder, dataLength, where);
  return { tensors: new Map(inFileOrder), metadata, dataStart };
}

function validateMetadata(value: unknown, where: string): Record<string, string> {
  if (!isPlainObject(value)) throw new TypeError(`${where}: __metadata__ must be an object, got ${kindOf(value)}`);
  for (const [key, item] of Object.entries(value)) {
    if (typeof item !== 'string') {
      throw new TypeError(`${where}: __metadata__[${quote(key)}] must be a string, got ${kindOf(item)}`);
    }
  }
  // fromEntries defines own properties, so a "__proto__" key stays data instead of replacing the prototype.
  return Object.fromEntries(Object.entries(value as Record<string, string>));
}

/** `what` names the tensor in messages. */
function validateEntry(value: unknown, dataLength: number, what: string): SafetensorsTensorInfo {
  if (!isPlainObject(value)) {
    throw new TypeError(
      `${what}: the entry must be an object with dtype, shape and data_offsets, got ${kindOf(value)}`,
    );
  }
  const dtype = validateDtype(value.dtype, what);
  const shape = validateShape(value.shape, what);
  const dataOffsets = validateOffsets(value.data_offsets, dataLength, what);
  const expectedBytes = elementCount(shape) * (BYTES_PER_ELEMENT.get(dtype) as number);
  const [begin, end] = dataOffsets;
  if (end - begin !== expectedBytes) {
    throw new RangeError(
      `${what}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes, but ${dtype} of shape [${shape}] ` +
        `takes ${expectedBytes}`,
    );
  }
  // Frozen: callers (and options.only) see these objects, and reading relies on them.
  return Object.freeze({ dtype, shape: Object.freeze(shape), dataOffsets: Object.freeze(dataOffsets) });
}

function validateDtype(dtype: unknown, what: string): string {
  if (dtype === undefined) throw new TypeError(`${what}: dtype is missing`);
  if (typeof dtype !== 'string') throw new TypeError(`${what}: dtype must be a string, got ${kindOf(dtype)}`);
  if (!BYTES_PER_ELEMENT.has(dtype)) throw new TypeError(`${what}: unknown dtype ${quote(dtype)}`);
  return dtype;
}

function validateShape(shape: unknown, what: string): number[] {
  if (shape === undefined) throw new TypeError(`${what}: shape is missing`);
  if (!Array.isArray(shape)) throw new TypeError(`${what}: shape must be an array, got ${kindOf(shape)}`);
  return shape.map((dim: unknown, axis) => {
    if (typeof dim !== 'number') throw new TypeError(`${what}: shape[${axis}] must be a number, got ${kindOf(dim)}`);
    if (!isNonNegativeInteger(dim)) {
      throw new RangeError(`${what}: shape[${axis}] must be a non-negative integer, got ${dim}`);
    }
    return withoutNegativeZero(dim);
  });
}

function validateOffsets(offsets: unknown, dataLength: number, what: string): [number, number] {
  if (offsets === undefined) throw new TypeError(`${what}: data_offsets is missing`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || offsets.some((offset) => typeof offset !== 'number')) {
    throw new TypeError(`${what}: data_offsets must be an array of two numbers, got ${preview(offsets)}`);
  }
  const [begin, end] = (offsets as [number, number]).map(withoutNegativeZero);
  if (!isNonNegativeInteger(begin) || !isNonNegativeInteger(end)) {
    throw new RangeError(`${what}: data_offsets must be non-negative integers, got [${begin}, ${end}]`);
  }
  if (begin > end) throw new RangeError(`${what}: data_offsets [${begin}, ${end}] are reversed`);
  if (end > dataLength) {
    throw new RangeError(`${what}: data_offsets [${begin}, ${end}] run past the ${dataLength}-byte data buffer`);
  }
  return [begin, end];
}

/** Exactly representable too: beyond 2^53 sizes and offsets would compare wrongly. */
function isNonNegativeInteger(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}

/** JSON may spell zero "-0"; a shape of [-0] must still equal [0]. */
function withoutNegativeZero(value: number): number {
  return value === 0 ? 0 : value;
}

/** The format requires the tensors to tile the data buffer exactly: anything else is a corrupt or forged file. */
function checkCoverage(inFileOrder: [string, SafetensorsTensorInfo][], dataLength: number, where: string): void {
  let covered = 0;
  let previous = '';
  for (const [name, { dataOffsets }] of inFileOrder) {
    const [begin, end] = dataOffsets;
    if (begin < covered) {
      throw new RangeError(
        `${where}: tensor ${quote(name)} at bytes [${begin}, ${end}] overlaps tensor ${quote(previous)}, ` +
          `which ends at ${covered}`,
      );
    }
    if (begin > covered) {
      throw new RangeError(
        `${where}: bytes [${covered}, ${begin}) of the data buffer, before tensor ${quote(name)}, belong to no tensor`,
      );
    }
    covered = end;
    previous = name;
  }
  if (covered !== dataLength) {
    throw new RangeError(
      `${where}: bytes [${covered}, ${dataLength}) at the end of the data buffer belong to no tensor`,
    );
  }
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((count, dim) => count * dim, 1);
}

// ---- tensor data ------------------------------------------------------------------------------------------------

/** The tensors to read, checked in full before any is read so that an unreadable one costs no I/O. */
function selectTensors(
  all: Map<string, SafetensorsTensorInfo>,
  only: TensorFilter | undefined,
  where: string,
): [string, SafetensorsTensorInfo][] {
  const selected = [...all].filter(([name, info]) => only === undefined || only(name, info));
  for (const [name, { dtype, shape }] of selected) {
    if (!READABLE_DTYPES.includes(dtype)) {
      throw new TypeError(
        `${where}: tensor ${quote(name)} has dtype ${dtype}, which cannot be read as float32 ` +
          `(readable: ${READABLE_DTYPES.join(', ')}); leave it out with options.only`,
      );
    }
    if (shape.length > 4) {
      throw new RangeError(
        `${where}: tensor ${quote(name)} has rank ${shape.length} (shape [${shape}]); tensors have rank 0 to 4`,
      );
    }
  }
  return selected;
}

function readValues(
  fd: number,
  dataStart: number,
  name: string,
  info: SafetensorsTensorInfo,
  where: string,
): Float32Array {
  const count = elementCount(info.shape);
  const position = dataStart + info.dataOffsets[0];
  const what = `${where}: tensor ${quote(name)}`;
  if (info.dtype === 'F32') {
    // Read straight into the result: no second copy of the tensor's bytes.
    const values = new Float32Array(count);
    const bytes = new Uint8Array(values.buffer);
    readInto(fd, position, bytes, what);
    if (!HOST_IS_LITTLE_ENDIAN) reverseBytesOfEachWord(bytes, 4);
    return values;
  }
  const bytes = readBytes(fd, position, info.dataOffsets[1] - info.dataOffsets[0], what);
  if (info.dtype === 'F16') return decodeFloat16(bytes, count);
  if (info.dtype === 'BF16') return decodeBfloat16(bytes, count);
  return decodeFloat64(bytes, count);
}

/** A BF16 tensor's bits as stored (little-endian), in one read. */
function readBfloat16Bits(fd: number, dataStart: number, info: SafetensorsTensorInfo, what: string): Uint16Array {
  const bits = new Uint16Array(elementCount(info.shape));
  const bytes = new Uint8Array(bits.buffer);
  readInto(fd, dataStart + info.dataOffsets[0], bytes, what);
  if (!HOST_IS_LITTLE_ENDIAN) reverseBytesOfEachWord(bytes, 2);
  return bits;
}

/** A float32 tensor rounded to bfloat16; the float32 one is freed. */
function rounded(tensor: Tensor): Tensor {
  try {
    return tensor.to('bfloat16');
  } finally {
    tensor.dispose();
  }
}

/** Tensor.from (or fromBFloat16), its errors (an empty tensor can still have dimensions too large) naming the tensor. */
function tensorFrom(values: Float32Array | Uint16Array, shape: readonly number[], what: string): Tensor {
  try {
    return values instanceof Uint16Array ? Tensor.fromBFloat16(values, shape) : Tensor.from(values, shape);
  } catch (error) {
    throw new RangeError(`${what}: ${(error as Error).message}`, { cause: error });
  }
}

function readBytes(fd: number, position: number, length: number, what: string): Uint8Array {
  const bytes = new Uint8Array(length);
  readInto(fd, position, bytes, what);
  return bytes;
}

function readInto(fd: number, position: number, target: Uint8Array, what: string): void {
  let done = 0;
  while (done < target.length) {
    const read = fs.readSync(fd, target, done, Math.min(target.length - done, MAX_READ_BYTES), position + done);
    if (read === 0) {
      throw new Error(`${what}: the file ended at byte ${position + done} (did it change while being read?)`);
    }
    done += read;
  }
}

function reverseBytesOfEachWord(bytes: Uint8Array, wordBytes: number): void {
  for (let start = 0; start < bytes.length; start += wordBytes) bytes.subarray(start, start + wordBytes).reverse();
}

// The decoders build float32 bit patterns and store them through a Uint32Array view of the result: both views use the
// host's byte order, so the patterns are exact on any host, NaN payloads included. Inputs are read byte by byte as
// little-endian.

function decodeBfloat16(bytes: Uint8Array, count: number): Float32Array {
  const values = new Float32Array(count);
  const bits = new Uint32Array(values.buffer);
  // bfloat16 is the top half of a float32.
  for (let index = 0; index < count; index++) bits[index] = (bytes[2 * index] | (bytes[2 * index + 1] << 8)) << 16;
  return values;
}

let float16Table: Uint32Array | undefined;

function decodeFloat16(bytes: Uint8Array, count: number): Float32Array {
  // 65536 halves, so a 256 KB table built once beats branching per element.
  const table = (float16Table ??= Uint32Array.from({ length: 1 << 16 }, (_, half) => float16ToFloat32Bits(half)));
  const values = new Float32Array(count);
  const bits = new Uint32Array(values.buffer);
  for (let index = 0; index < count; index++) bits[index] = table[bytes[2 * index] | (bytes[2 * index + 1] << 8)];
  return values;
}

/** The float32 bit pattern of an IEEE half (1 sign, 5 exponent with bias 15, 10 mantissa bits); always exact. */
function float16ToFloat32Bits(half: number): number {
  const sign = (half & 0x8000) << 16;
  const exponent = (half >> 10) & 0x1f;
  let mantissa = half & 0x3ff;
  if (exponent === 0x1f) return (sign | 0x7f800000 | (mantissa << 13)) >>> 0; // infinity, or NaN keeping its payload
  if (exponent !== 0) return (sign | ((exponent + 127 - 15) << 23) | (mantissa << 13)) >>> 0;
  if (mantissa === 0) return sign >>> 0; // signed zero
  // A subnormal half (mantissa × 2^-24) is a normal float32: shift the leading 1 up into the implicit bit.
  let shifts = 0;
  while ((mantissa & 0x400) === 0) {
    mantissa <<= 1;
    shifts++;
  }
  return (sign | ((127 - 14 - shifts) << 23) | ((mantissa & 0x3ff) << 13)) >>> 0;
}

function decodeFloat64(bytes: Uint8Array, count: number): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const values = new Float32Array(count); // storing rounds to nearest float32, as a C cast does
  for (let index = 0; index < count; index++) values[index] = view.getFloat64(8 * index, true);
  return values;
}

// ---- writing ----------------------------------------------------------------------------------------------------

/**
 * Writes `tensors` in name order, float32 ones as F32 and bfloat16 ones as BF16 (their bits as they are), with
 * `metadata` (strings only), atomically: the file is written beside `path` and renamed over it once complete, so a
 * crash never leaves a half-written file. Streams one tensor at a time.
 */
export function writeSafetensors(
  path: string,
  tensors: Map<string, Tensor> | Record<string, Tensor>,
  metadata: Record<string, string> = {},
): void {
  checkPath(path, 'writeSafetensors');
  const named = namedTensors(tensors);
  checkMetadataToWrite(metadata);
  const header = encodeHeader(named, metadata);
  writeFileAtomicWith(path, (append) => {
    append(headerLengthField(header.length));
    append(header);
    for (const [, tensor] of named) append(littleEndianBytes(tensor));
  });
}

function namedTensors(tensors: unknown): [string, Tensor][] {
  let entries: [unknown, unknown][];
  if (tensors instanceof Map) entries = [...tensors];
  else if (isPlainObject(tensors)) entries = Object.entries(tensors);
  else throw new TypeError(`writeSafetensors: tensors must be a Map or an object of Tensors, got ${kindOf(tensors)}`);
  for (const [name, tensor] of entries) {
    if (typeof name !== 'string' || name === '') {
      throw new TypeError(`writeSafetensors: tensor names must be non-empty strings, got ${quote(String(name))}`);
    }
    if (name === '__metadata__') throw new TypeError('writeSafetensors: "__metadata__" cannot name a tensor');
    handleOf(tensor, 'writeSafetensors', `tensors[${quote(name)}]`); // throws unless a live Tensor
  }
  const named = entries as [string, Tensor][];
  return named.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

function checkMetadataToWrite(metadata: unknown): void {
  if (!isPlainObject(metadata)) {
    throw new TypeError(`writeSafetensors: metadata must be an object, got ${kindOf(metadata)}`);
  }
  for (const [key, value] of Object.entries(metadata)) {
    if (typeof value !== 'string') {
      throw new TypeError(`writeSafetensors: metadata[${quote(key)}] must be a string, got ${kindOf(value)}`);
    }
  }
}

/** The JSON header as UTF-8, padded with spaces to a multiple of 8 bytes so the data buffer starts aligned. */
function encodeHeader(named: [string, Tensor][], metadata: Record<string, string>): Uint8Array {
  // Assembled by hand: a JS object would move integer-like names ahead of the others.
  const fields: string[] = [];
  if (Object.keys(metadata).length > 0) fields.push(`"__metadata__":${JSON.stringify(metadata)}`);
  let offset = 0;
  for (const [name, tensor] of named) {
    const bfloat16 = tensor.dtype === 'bfloat16';
    const end = offset + (bfloat16 ? 2 : 4) * tensor.size;
    const entry = { dtype: bfloat16 ? 'BF16' : 'F32', shape: tensor.shape, data_offsets: [offset, end] };
    fields.push(`${JSON.stringify(name)}:${JSON.stringify(entry)}`);
    offset = end;
  }
  const json = Buffer.from(`{${fields.join(',')}}`, 'utf8');
  const padding = (8 - (json.length % 8)) % 8;
  // The reader refuses longer headers: never write a file that cannot be read back.
  if (json.length + padding > MAX_HEADER_BYTES) {
    throw new RangeError(
      `writeSafetensors: the header (tensor names, shapes and metadata) would be ${json.length + padding} bytes, ` +
        `above the ${MAX_HEADER_BYTES}-byte limit that readers enforce`,
    );
  }
  return Buffer.concat([json, Buffer.alloc(padding, ' ')]);
}

function headerLengthField(headerLength: number): Uint8Array {
  const field = new Uint8Array(8);
  new DataView(field.buffer).setBigUint64(0, BigInt(headerLength), true);
  return field;
}

/** A tensor's elements as the file stores them: float32, or bfloat16 bits (the top halves of the exact widening). */
function littleEndianBytes(tensor: Tensor): Uint8Array {
  const values = tensor.toFloat32Array();
  if (tensor.dtype === 'bfloat16') {
    const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
    const bits = Uint16Array.from(words, (word) => word >>> 16);
    const bytes = new Uint8Array(bits.buffer);
    if (!HOST_IS_LITTLE_ENDIAN) reverseBytesOfEachWord(bytes, 2);
    return bytes;
  }
  const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  if (!HOST_IS_LITTLE_ENDIAN) reverseBytesOfEachWord(bytes, 4); // `values` is our own copy: safe to swap in place
  return bytes;
}

// ---- small helpers ----------------------------------------------------------------------------------------------

/** An object literal or a JSON object: not an array, a Map, a Tensor or any other class instance. */
function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object') return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

/** A value from the file as JSON, cut short: it may be arbitrarily large, or nested too deeply to stringify. */
function preview(value: unknown): string {
  let json: string;
  try {
    json = JSON.stringify(value) ?? String(value);
  } catch {
    return `a ${kindOf(value)} nested too deeply to show`;
  }
  return json.length > 100 ? `${json.slice(0, 100)}...` : json;
}

/** A name as JSON would write it, cut short when long: names come from files and may be anything. */
function quote(name: string): string {
  const quoted = JSON.stringify(name);
  return quoted.length > 200 ? `${quoted.slice(0, 200)}..."` : quoted;
}
