// The safetensors file format (https://github.com/huggingface/safetensors), used for our own
// checkpoints and for Hugging Face model folders (SPEC.md section 7, loadModel and `convert`).
// Layout: an 8-byte little-endian unsigned header length N; N bytes of UTF-8 JSON mapping each
// tensor name to { dtype, shape, data_offsets: [begin, end] } (offsets relative to the data
// section) plus an optional "__metadata__" of string -> string; then the data section.
// Reading validates as strictly as the reference Rust implementation: the tensors must tile the
// data section exactly (no overlap, no gap, no trailing bytes). Writing pads the header with
// spaces to a multiple of 8 (so every tensor starts 8-aligned) and goes through writeFileAtomic.
// Not here: mapping tensor names onto a model (model/ does that), lazy or memory-mapped loading.

import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { ArgumentError, CheckpointError, ShapeError } from '../core/errors.js';
import { writeFileAtomic } from './atomic.js';

/** Element types of the safetensors format that this module reads and writes. */
export type Dtype = 'BOOL' | 'U8' | 'I8' | 'U16' | 'I16' | 'F16' | 'BF16' | 'U32' | 'I32' | 'F32' | 'F64' | 'U64' | 'I64';

/** The typed array that holds each dtype. F16 and BF16 are kept as raw bits: see toFloat32. */
export type TensorData =
  | Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array
  | Float32Array | Float64Array | BigUint64Array | BigInt64Array;

/** One tensor: `data.length` is the product of `shape` (1 for shape []), row-major. */
export interface SafeTensor {
  dtype: Dtype;
  shape: number[];
  data: TensorData;
}

/** One header entry: where a tensor's bytes lie, relative to the start of the data section. */
export interface TensorInfo {
  dtype: Dtype;
  shape: number[];
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  /** Tensors in header order. */
  tensors: Map<string, TensorInfo>;
  /** The "__metadata__" object ({} when absent). */
  metadata: Record<string, string>;
  /** Absolute file offset of the data section: 8 + N. */
  dataStart: number;
  fileSize: number;
}

export interface SafetensorsFile {
  tensors: Map<string, SafeTensor>;
  metadata: Record<string, string>;
}

interface DtypeInfo {
  bytes: number;
  make: (n: number) => TensorData;
  is: (a: unknown) => boolean;
  arrayName: string;
}

const DTYPES: Record<Dtype, DtypeInfo> = {
  BOOL: { bytes: 1, make: (n) => new Uint8Array(n), is: (a) => a instanceof Uint8Array, arrayName: 'Uint8Array' },
  U8: { bytes: 1, make: (n) => new Uint8Array(n), is: (a) => a instanceof Uint8Array, arrayName: 'Uint8Array' },
  I8: { bytes: 1, make: (n) => new Int8Array(n), is: (a) => a instanceof Int8Array, arrayName: 'Int8Array' },
  U16: { bytes: 2, make: (n) => new Uint16Array(n), is: (a) => a instanceof Uint16Array, arrayName: 'Uint16Array' },
  I16: { bytes: 2, make: (n) => new Int16Array(n), is: (a) => a instanceof Int16Array, arrayName: 'Int16Array' },
  F16: { bytes: 2, make: (n) => new Uint16Array(n), is: (a) => a instanceof Uint16Array, arrayName: 'Uint16Array (raw half bits)' },
  BF16: { bytes: 2, make: (n) => new Uint16Array(n), is: (a) => a instanceof Uint16Array, arrayName: 'Uint16Array (raw bfloat16 bits)' },
  U32: { bytes: 4, make: (n) => new Uint32Array(n), is: (a) => a instanceof Uint32Array, arrayName: 'Uint32Array' },
  I32: { bytes: 4, make: (n) => new Int32Array(n), is: (a) => a instanceof Int32Array, arrayName: 'Int32Array' },
  F32: { bytes: 4, make: (n) => new Float32Array(n), is: (a) => a instanceof Float32Array, arrayName: 'Float32Array' },
  F64: { bytes: 8, make: (n) => new Float64Array(n), is: (a) => a instanceof Float64Array, arrayName: 'Float64Array' },
  U64: { bytes: 8, make: (n) => new BigUint64Array(n), is: (a) => a instanceof BigUint64Array, arrayName: 'BigUint64Array' },
  I64: { bytes: 8, make: (n) => new BigInt64Array(n), is: (a) => a instanceof BigInt64Array, arrayName: 'BigInt64Array' },
};

/** Bytes per element of a dtype. */
export function dtypeBytes(dtype: Dtype): number {
  return DTYPES[dtype].bytes;
}

export function isDtype(s: unknown): s is Dtype {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPES, s);
}

// The reference implementation refuses headers above 100 MB; a larger one is corruption, and
// reading it would allocate whatever a damaged length field says.
const MAX_HEADER_BYTES = 100_000_000;

// Typed arrays use the host's byte order and the format is little-endian. Every platform Node
// supports in practice is little-endian; a big-endian host is refused rather than misread.
const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Reads and validates the header of a safetensors file without reading tensor data. */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  const fh = await openForRead(path);
  try {
    return await readHeader(fh, path);
  } finally {
    await fh.close();
  }
}

/**
 * Reads a whole safetensors file. F16/BF16 tensors come back as raw bits in a Uint16Array;
 * toFloat32 converts any tensor to Float32Array.
 *
 * @example
 *   const { tensors, metadata } = await readSafetensors('run/model.safetensors');
 *   const wte = toFloat32(tensors.get('wte.weight')!);   // (V, C)
 */
export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  const fh = await openForRead(path);
  try {
    const header = await readHeader(fh, path);
    const tensors = new Map<string, SafeTensor>();
    for (const [name, info] of header.tensors) {
      const numel = shapeNumel(info.shape);
      // A fresh array per tensor: aligned whatever the header length, and no tensor keeps the
      // others alive.
      const data = DTYPES[info.dtype].make(numel);
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      await readExactly(fh, bytes, header.dataStart + info.dataOffsets[0], path, `tensor '${name}'`);
      tensors.set(name, { dtype: info.dtype, shape: info.shape.slice(), data });
    }
    return { tensors, metadata: header.metadata };
  } finally {
    await fh.close();
  }
}

/**
 * Writes tensors (and string metadata) to a safetensors file, atomically: the target is replaced
 * only once the whole file is on disk. Tensors are stored in the order given.
 *
 * @example
 *   await writeSafetensors('run/model.safetensors',
 *     { 'wte.weight': { dtype: 'F32', shape: [V, C], data: wte } }, { step: '1000' });
 */
export async function writeSafetensors(
  path: string,
  tensors: Map<string, SafeTensor> | Record<string, SafeTensor>,
  metadata: Record<string, string> = {},
): Promise<void> {
  if (!HOST_LITTLE_ENDIAN) throw new CheckpointError(path, 'writing safetensors on a big-endian host is not supported');
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const parts: string[] = [];
  const meta: Record<string, string> = {};
  for (const [key, value] of Object.entries(metadata ?? {})) {
    if (typeof value !== 'string') throw new ArgumentError(`metadata['${key}']`, 'a string', value);
    meta[key] = value;
  }
  if (Object.keys(meta).length > 0) parts.push(`"__metadata__":${JSON.stringify(meta)}`);

  const views: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of entries) {
    const arg = `tensors['${name}']`;
    if (name === '__metadata__') throw new ArgumentError('tensors', 'no tensor named "__metadata__" (reserved)', name);
    if (t === null || typeof t !== 'object') throw new ArgumentError(arg, 'an object { dtype, shape, data }', t);
    if (!isDtype(t.dtype)) throw new ArgumentError(`${arg}.dtype`, `one of ${Object.keys(DTYPES).join(', ')}`, t.dtype);
    const info = DTYPES[t.dtype];
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new ArgumentError(`${arg}.shape`, 'an array of non-negative integers', t.shape);
    }
    if (!info.is(t.data)) {
      const got = t.data === null || t.data === undefined ? String(t.data) : (t.data as object).constructor?.name;
      throw new ArgumentError(`${arg}.data`, `a ${info.arrayName} for dtype ${t.dtype}`, got);
    }
    const numel = shapeNumel(t.shape);
    if (t.data.length !== numel) {
      throw new ShapeError(`${arg}.data`, `length ${numel} for shape [${t.shape.join(', ')}]`, `length ${t.data.length}`);
    }
    const nbytes = numel * info.bytes;
    parts.push(`${JSON.stringify(name)}:${JSON.stringify({ dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + nbytes] })}`);
    views.push(new Uint8Array(t.data.buffer, t.data.byteOffset, nbytes));
    offset += nbytes;
  }

  let headerText = `{${parts.join(',')}}`;
  const unpadded = Buffer.byteLength(headerText, 'utf8');
  headerText += ' '.repeat((8 - (unpadded % 8)) % 8);
  const headerBytes = Buffer.from(headerText, 'utf8');
  const lengthBytes = Buffer.alloc(8);
  lengthBytes.writeBigUInt64LE(BigInt(headerBytes.length));
  await writeFileAtomic(path, [lengthBytes, headerBytes, ...views]);
}

/**
 * Converts a tensor to float32: F32 is returned as is (same array, no copy); F16 and BF16 bits are
 * widened exactly; F64 and integers are rounded to the nearest float32.
 *
 * @example
 *   toFloat32({ dtype: 'BF16', shape: [2], data: new Uint16Array([0x3f80, 0xc020]) })  // [1, -2.5]
 */
export function toFloat32(tensor: SafeTensor): Float32Array {
  const { dtype, data } = tensor;
  switch (dtype) {
    case 'F32':
      return data as Float32Array;
    case 'BF16': {
      const bits = data as Uint16Array;
      const out = new Float32Array(bits.length);
      const out32 = new Uint32Array(out.buffer);
      // bfloat16 is the top half of a float32: shifting the bits back is exact, NaN payloads too.
      for (let i = 0; i < bits.length; i++) out32[i] = bits[i] << 16;
      return out;
    }
    case 'F16': {
      const bits = data as Uint16Array;
      const table = halfTable();
      const out = new Float32Array(bits.length);
      for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]];
      return out;
    }
    case 'U64':
    case 'I64': {
      const src = data as BigInt64Array | BigUint64Array;
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = Number(src[i]);
      return out;
    }
    case 'BOOL': case 'U8': case 'I8': case 'U16': case 'I16': case 'U32': case 'I32': case 'F64':
      return Float32Array.from(data as ArrayLike<number>);
  }
}

/**
 * Builds a tensor of the given float dtype from float32 values, rounding to nearest, ties to even
 * (F16 overflows to +-Infinity above 65504; NaN stays NaN).
 *
 * @example
 *   fromFloat32(new Float32Array([1, -2.5]), [2], 'F16').data   // Uint16Array [0x3c00, 0xc100]
 */
export function fromFloat32(values: ArrayLike<number>, shape: number[], dtype: 'F32' | 'F16' | 'BF16' | 'F64'): SafeTensor {
  const n = values.length;
  if (shapeNumel(shape) !== n) {
    throw new ShapeError('values', `length ${shapeNumel(shape)} for shape [${shape.join(', ')}]`, `length ${n}`);
  }
  switch (dtype) {
    case 'F32':
      return { dtype, shape: shape.slice(), data: Float32Array.from(values) };
    case 'F64':
      return { dtype, shape: shape.slice(), data: Float64Array.from(values) };
    case 'BF16': {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = floatToBf16Bits(values[i]);
      return { dtype, shape: shape.slice(), data: out };
    }
    case 'F16': {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = floatToHalfBits(values[i]);
      return { dtype, shape: shape.slice(), data: out };
    }
    default:
      throw new ArgumentError('dtype', "one of 'F32', 'F16', 'BF16', 'F64'", dtype);
  }
}

/** Number of elements of a shape ([] is a scalar: 1). */
export function shapeNumel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Float conversions

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** float32 -> bfloat16 bits, round to nearest even; NaN -> quiet NaN with the same sign. */
export function floatToBf16Bits(x: number): number {
  scratchF32[0] = x;
  const bits = scratchU32[0];
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) return ((bits >>> 16) & 0x8000) | 0x7fc0;
  // Adding 0x7fff plus the lowest kept bit rounds to nearest with ties to even; a carry out of the
  // mantissa correctly bumps the exponent (up to Infinity).
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 -> IEEE half bits, round to nearest even, including into and out of subnormals. */
export function floatToHalfBits(x: number): number {
  scratchF32[0] = x;
  const bits = scratchU32[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  const e = exp - 127 + 15; // biased half exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Half subnormal: value = m * 2^-24, so m = (1.mant) * 2^(exp-127+24) = M >> (14 - e).
    const shift = 14 - e;
    if (shift > 24) return sign; // below half of the smallest subnormal: rounds to zero
    const M = mant | 0x800000;
    let q = M >>> shift;
    const rem = M & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (q & 1) === 1)) q++; // q = 0x400 is the smallest normal: still right
    return sign | q;
  }
  let q = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (q & 1) === 1)) q++; // a carry may reach 0x7c00 = Infinity: right
  return sign | q;
}

/** IEEE half bits -> number (exact). */
export function halfBitsToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 0x1f) return m !== 0 ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

let HALF_TABLE: Float32Array | undefined;
function halfTable(): Float32Array {
  if (HALF_TABLE === undefined) {
    HALF_TABLE = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) HALF_TABLE[h] = halfBitsToFloat(h);
  }
  return HALF_TABLE;
}

// ---------------------------------------------------------------------------------------------
// Reading

async function openForRead(path: string): Promise<FileHandle> {
  if (!HOST_LITTLE_ENDIAN) throw new CheckpointError(path, 'reading safetensors on a big-endian host is not supported');
  try {
    return await open(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CheckpointError(path, 'file not found');
    if (code === 'EISDIR') throw new CheckpointError(path, 'is a folder, expected a .safetensors file');
    throw new CheckpointError(path, `cannot open: ${(err as Error).message}`);
  }
}

async function readHeader(fh: FileHandle, path: string): Promise<SafetensorsHeader> {
  const stat = await fh.stat();
  if (!stat.isFile()) throw new CheckpointError(path, 'not a regular file');
  const fileSize = stat.size;
  if (fileSize < 8) {
    throw new CheckpointError(path, `truncated: ${fileSize} bytes, shorter than the 8-byte header length field`);
  }
  const lenBytes = Buffer.alloc(8);
  await readExactly(fh, lenBytes, 0, path, 'the header length');
  const headerLen = lenBytes.readBigUInt64LE(0);
  if (headerLen > BigInt(fileSize - 8)) {
    throw new CheckpointError(path, `header length ${headerLen} runs beyond the end of the file (${fileSize} bytes)`);
  }
  const N = Number(headerLen);
  if (N > MAX_HEADER_BYTES) throw new CheckpointError(path, `header length ${N} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (N < 2) throw new CheckpointError(path, `header length ${N} is too short to hold a JSON object`);
  const headerBytes = Buffer.alloc(N);
  await readExactly(fh, headerBytes, 8, path, 'the header');

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new CheckpointError(path, 'header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CheckpointError(path, `header is not valid JSON (${(err as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new CheckpointError(path, 'header is not a JSON object');
  }

  const dataStart = 8 + N;
  const dataLen = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
        throw new CheckpointError(path, '__metadata__ is not an object of strings');
      }
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') throw new CheckpointError(path, `__metadata__['${k}'] is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    tensors.set(name, parseEntry(path, name, entry));
  }

  // The tensors must tile [0, dataLen) exactly, as in the reference implementation.
  const order = [...tensors.entries()].sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0] || a[1].dataOffsets[1] - b[1].dataOffsets[1]);
  let end = 0;
  let prev = '';
  for (const [name, info] of order) {
    const [b, e] = info.dataOffsets;
    if (e > dataLen) {
      throw new CheckpointError(path, `truncated: tensor '${name}' ends at byte ${e} of the data section, which holds only ${dataLen} bytes`);
    }
    if (b < end) throw new CheckpointError(path, `tensors '${prev}' and '${name}' overlap (data_offsets ${b} < ${end})`);
    if (b > end) throw new CheckpointError(path, `${b - end} unused bytes in the data section before tensor '${name}'`);
    end = e;
    prev = name;
  }
  if (end !== dataLen) throw new CheckpointError(path, `${dataLen - end} trailing bytes after the last tensor's data`);
  return { tensors, metadata, dataStart, fileSize };
}

function parseEntry(path: string, name: string, entry: unknown): TensorInfo {
  const where = `tensor '${name}'`;
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
    throw new CheckpointError(path, `${where}: entry is not an object`);
  }
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
  if (!isDtype(dtype)) {
    throw new CheckpointError(path, `${where}: unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(DTYPES).join(', ')})`);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new CheckpointError(path, `${where}: shape ${JSON.stringify(shape)} is not an array of non-negative integers`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    throw new CheckpointError(path, `${where}: data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
  }
  const [b, e] = offsets as [number, number];
  if (e < b) throw new CheckpointError(path, `${where}: data_offsets [${b}, ${e}] end before they begin`);
  const numel = shapeNumel(shape);
  const expected = numel * DTYPES[dtype].bytes;
  if (!Number.isSafeInteger(expected) || e - b !== expected) {
    throw new CheckpointError(path, `${where}: data_offsets [${b}, ${e}] span ${e - b} bytes, but shape [${shape.join(', ')}] of ${dtype} needs ${expected}`);
  }
  return { dtype, shape: shape.slice(), dataOffsets: [b, e] };
}

async function readExactly(fh: FileHandle, into: Uint8Array, position: number, path: string, what: string): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await fh.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) throw new CheckpointError(path, `truncated while reading ${what}`);
    done += bytesRead;
  }
}
