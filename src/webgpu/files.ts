// A run folder from bytes, for the browser (no file system): config.json, model.safetensors and
// tokenizer.json as the user picked them or as fetched from a URL, into host parameters and a
// tokenizer. The same checks as src/io/checkpoint.ts (format, version, names, shapes), raising
// CheckpointError naming the file. Reads sparsek run folders only: Hugging Face folders need
// their family's name mapping (src/io/hf.ts, node-only for now).
// The safetensors parser here is a reader of an in-memory file (src/io/safetensors.ts reads
// through node:fs); it accepts F32, F16 and BF16 tensors.

import { CheckpointError } from '../core/errors.js';
import { ModelConfig, checkConfig } from '../model/config.js';
import { Params, allocParamsOn } from '../model/params.js';
import { Tokenizer, tokenizerFromJSON } from '../tokenizer/index.js';

/** The three files of a run folder, as text (JSON) and bytes. */
export interface RunFiles {
  config: string; // config.json
  weights: ArrayBuffer; // model.safetensors
  tokenizer: string; // tokenizer.json
}

/** A model ready for WebGpuModel.create. */
export interface LoadedRun {
  config: ModelConfig;
  params: Params;
  tokenizer: Tokenizer;
}

interface TensorEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** name -> float32 values of every tensor in a safetensors file held in memory. */
export function parseSafetensors(bytes: ArrayBuffer, file = 'model.safetensors'): Map<string, { shape: number[]; data: Float32Array }> {
  if (bytes.byteLength < 8) throw new CheckpointError(file, `${bytes.byteLength} bytes: too short for a safetensors file`);
  const view = new DataView(bytes);
  const n = Number(view.getBigUint64(0, true));
  if (n > bytes.byteLength - 8 || n > 100_000_000) throw new CheckpointError(file, `header length ${n} exceeds the file (${bytes.byteLength} bytes)`);
  let header: Record<string, TensorEntry | Record<string, string>>;
  try {
    header = JSON.parse(new TextDecoder().decode(new Uint8Array(bytes, 8, n)));
  } catch (e) {
    throw new CheckpointError(file, `header is not valid JSON (${(e as Error).message})`);
  }
  const start = 8 + n;
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets: [b, e] } = entry as TensorEntry;
    const numel = shape.reduce((a, d) => a * d, 1);
    const width = dtype === 'F32' ? 4 : dtype === 'F16' || dtype === 'BF16' ? 2 : 0;
    if (width === 0) throw new CheckpointError(file, `tensor '${name}' has dtype ${dtype}; this reader takes F32, F16 and BF16`);
    if (e - b !== numel * width || start + e > bytes.byteLength) throw new CheckpointError(file, `tensor '${name}': data_offsets [${b}, ${e}] do not fit shape [${shape}] of ${dtype} in the file`);
    const raw = bytes.slice(start + b, start + e); // a copy: aligned whatever the header length
    let data: Float32Array;
    if (dtype === 'F32') data = new Float32Array(raw);
    else if (dtype === 'BF16') {
      const bits = new Uint16Array(raw);
      const u = new Uint32Array(numel);
      for (let i = 0; i < numel; i++) u[i] = bits[i] << 16; // bfloat16 is the top half of a float32
      data = new Float32Array(u.buffer);
    } else {
      const bits = new Uint16Array(raw);
      data = new Float32Array(numel);
      for (let i = 0; i < numel; i++) data[i] = halfToFloat(bits[i]);
    }
    out.set(name, { shape, data });
  }
  return out;
}

/** Reads a run folder's files (what `sparsek train --out` writes) into a model on the host. */
export function runFromFiles(files: RunFiles): LoadedRun {
  let cfg: { format?: string; version?: number; model?: ModelConfig };
  try {
    cfg = JSON.parse(files.config);
  } catch (e) {
    throw new CheckpointError('config.json', `not valid JSON (${(e as Error).message})`);
  }
  if (cfg?.format !== 'sparsek-run') throw new CheckpointError('config.json', `not a sparsek run (format ${JSON.stringify(cfg?.format)}, expected "sparsek-run")`);
  if (cfg.version !== 1) throw new CheckpointError('config.json', `format version ${cfg.version}, this reader reads version 1`);
  let config: ModelConfig;
  try {
    config = checkConfig(cfg.model as ModelConfig);
  } catch (e) {
    throw new CheckpointError('config.json', `invalid model config: ${(e as Error).message}`);
  }
  // Plain arrays, not the CPU backend's (which may start worker threads).
  const params = allocParamsOn(config, { alloc: (n) => new Float32Array(n), view: (b, off, n) => b.subarray(off, off + n) });
  const tensors = parseSafetensors(files.weights);
  params.specs.forEach((spec, i) => {
    const t = tensors.get(spec.name);
    if (!t) throw new CheckpointError('model.safetensors', `missing tensor '${spec.name}' of shape [${spec.shape}]`);
    if (t.shape.length !== spec.shape.length || t.shape.some((d, j) => d !== spec.shape[j])) {
      throw new CheckpointError('model.safetensors', `tensor '${spec.name}' has shape [${t.shape}], the config needs [${spec.shape}]`);
    }
    params.views[i].set(t.data);
  });
  let tokenizer: Tokenizer;
  try {
    tokenizer = tokenizerFromJSON(JSON.parse(files.tokenizer));
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError('tokenizer.json', (e as Error).message);
  }
  if (tokenizer.vocabSize > config.vocabSize) throw new CheckpointError('tokenizer.json', `vocabulary of ${tokenizer.vocabSize} tokens exceeds the model's ${config.vocabSize}`);
  return { config, params, tokenizer };
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}
