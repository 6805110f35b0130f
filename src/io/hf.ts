// Hugging Face model folders (SPEC.md section 7, loadModel): config.json -> ModelConfig, the
// weights of model.safetensors (or of the shards listed by model.safetensors.index.json) -> our
// parameter layout (src/model/params.ts), and tokenizer.json through @huggingface/tokenizers.
//
// Families (config.json's model_type): llama, mistral, qwen2 (the Llama block: names map one to
// one), gpt2 (LayerNorm, learned positions, Conv1D weights stored (in, out), fused c_attn) and
// gpt_neox (LayerNorm, parallel residual, partial RoPE, query_key_value fused per head as
// [q, k, v] blocks of HS rows). Both config layouts are read: the older one (rope_theta,
// rope_scaling, rotary_pct, rotary_emb_base, n_embd ...) and transformers 5's rope_parameters.
// Weights may be F32, F16 or BF16; they are widened to float32 exactly.
//
// What the math depends on is checked, and whatever this loader cannot reproduce is refused with a
// CheckpointError naming the file and field (rope scaling, a head_dim other than hidden/heads,
// a mix of sliding and full attention layers, unknown activations, unexpected tensors). Fields
// that do not change the forward pass (token ids, dropout, initializer_range, use_cache, ...)
// are ignored. Not here: writing HF folders (export), .bin (pickle) checkpoints, quantized weights.

import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer as HfTokenizerImpl } from '@huggingface/tokenizers';
import { CheckpointError } from '../core/errors.js';
import { ATTENTION_KINDS, ModelConfig, checkConfig, headSize } from '../model/config.js';
import { Params, allocParams } from '../model/params.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { SafeTensor, readSafetensors, toFloat32 } from './safetensors.js';

export const HF_MODEL_TYPES = ['llama', 'mistral', 'qwen2', 'gpt2', 'gpt_neox'] as const;
export type HfModelType = (typeof HF_MODEL_TYPES)[number];

/** A Hugging Face folder read into our layout (weights on the host, float32). */
export interface HfCheckpoint {
  modelType: HfModelType;
  config: ModelConfig;
  params: Params;
  tokenizer: Tokenizer | null; // null when the folder has no tokenizer.json
}

type Json = Record<string, unknown>;

/** Reads config.json as a JSON object; CheckpointError when missing or malformed. */
export function readJsonObject(file: string): Json {
  if (!fs.existsSync(file)) throw new CheckpointError(file, 'file not found');
  let v: unknown;
  try {
    v = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new CheckpointError(file, `not valid JSON (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new CheckpointError(file, 'expected a JSON object');
  return v as Json;
}

/** True when dir holds a config.json with a model_type (a Hugging Face model folder). */
export function isHfFolder(dir: string): boolean {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) return false;
  try {
    const v = JSON.parse(fs.readFileSync(file, 'utf8'));
    return typeof v === 'object' && v !== null && typeof v.model_type === 'string';
  } catch {
    return false;
  }
}

// ---- config.json -------------------------------------------------------------------------------

/** Field access that names config.json and the field in every error. */
class Fields {
  constructor(readonly raw: Json, readonly file: string) {}

  has(name: string): boolean {
    return this.raw[name] !== undefined && this.raw[name] !== null;
  }

  /** The first present field among names (old and new spellings); CheckpointError if none is. */
  int(names: string[], min = 1): number {
    const name = names.find((n) => this.has(n));
    if (name === undefined) throw new CheckpointError(this.file, `missing field '${names[0]}'${names.length > 1 ? ` (or ${names.slice(1).map((n) => `'${n}'`).join(', ')})` : ''}`);
    return this.intAt(name, min);
  }

  optInt(names: string[], fallback: number, min = 1): number {
    const name = names.find((n) => this.has(n));
    return name === undefined ? fallback : this.intAt(name, min);
  }

  private intAt(name: string, min: number): number {
    const v = this.raw[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new CheckpointError(this.file, `field '${name}': expected an integer >= ${min}, got ${JSON.stringify(v)}`);
    return v;
  }

  num(names: string[], fallback: number): number {
    const name = names.find((n) => this.has(n));
    if (name === undefined) return fallback;
    const v = this.raw[name];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new CheckpointError(this.file, `field '${name}': expected a number, got ${JSON.stringify(v)}`);
    return v;
  }

  bool(name: string, fallback: boolean): boolean {
    if (!this.has(name)) return fallback;
    const v = this.raw[name];
    if (typeof v !== 'boolean') throw new CheckpointError(this.file, `field '${name}': expected true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  str(name: string, fallback: string): string {
    if (!this.has(name)) return fallback;
    const v = this.raw[name];
    if (typeof v !== 'string') throw new CheckpointError(this.file, `field '${name}': expected a string, got ${JSON.stringify(v)}`);
    return v;
  }

  unsupported(name: string, why: string): never {
    throw new CheckpointError(this.file, `field '${name}' = ${JSON.stringify(this.raw[name])}: ${why}`);
  }
}

/**
 * Rotary settings in either layout: rope_theta / rope_scaling (older transformers; NeoX's
 * rotary_emb_base and rotary_pct) or rope_parameters { rope_type, rope_theta,
 * partial_rotary_factor } (transformers 5). Only the default (unscaled) rotation is supported.
 */
function ropeSettings(f: Fields, defaults: { theta: number; partial: number }): { theta: number; partial: number } {
  let theta = f.num(['rope_theta', 'rotary_emb_base'], defaults.theta);
  let partial = f.num(['partial_rotary_factor', 'rotary_pct'], defaults.partial);
  for (const key of ['rope_scaling', 'rope_parameters']) {
    if (!f.has(key)) continue;
    const v = f.raw[key];
    if (typeof v !== 'object' || v === null || Array.isArray(v)) f.unsupported(key, 'expected an object or null');
    const r = v as Json;
    const type = r.rope_type ?? r.type ?? 'default';
    if (type !== 'default') {
      f.unsupported(key, `rope type '${String(type)}' is not supported (only the default, unscaled rotation: no linear, dynamic, yarn, llama3 or longrope scaling)`);
    }
    if (r.rope_theta !== undefined) {
      if (typeof r.rope_theta !== 'number' || !(r.rope_theta > 0)) f.unsupported(key, 'rope_theta must be a positive number');
      theta = r.rope_theta;
    }
    if (r.partial_rotary_factor !== undefined) {
      if (typeof r.partial_rotary_factor !== 'number' || !(r.partial_rotary_factor > 0 && r.partial_rotary_factor <= 1)) f.unsupported(key, 'partial_rotary_factor must be in (0, 1]');
      partial = r.partial_rotary_factor;
    }
  }
  if (!(theta > 0)) throw new CheckpointError(f.file, `rope theta: expected a positive number, got ${theta}`);
  return { theta, partial };
}

/**
 * The attention pattern of a Llama-family config: dense, or sliding window W = sliding_window
 * when every layer uses it (SPEC section 3's window: W positions including the query's own).
 */
function llamaAttention(f: Fields, modelType: HfModelType, layers: number): Pick<ModelConfig, 'attention' | 'window'> {
  let sliding: boolean[];
  if (f.has('layer_types')) {
    const lt = f.raw.layer_types;
    if (!Array.isArray(lt) || lt.length !== layers || lt.some((t) => t !== 'full_attention' && t !== 'sliding_attention')) {
      f.unsupported('layer_types', `expected ${layers} entries of 'full_attention' or 'sliding_attention'`);
    }
    sliding = lt.map((t) => t === 'sliding_attention');
  } else if (modelType === 'mistral') {
    sliding = new Array(layers).fill(f.has('sliding_window'));
  } else if (modelType === 'qwen2') {
    // transformers: layer i slides when use_sliding_window and i >= max_window_layers
    const use = f.bool('use_sliding_window', false) && f.has('sliding_window');
    const maxWindowLayers = f.optInt(['max_window_layers'], 28, 0);
    sliding = Array.from({ length: layers }, (_, i) => use && i >= maxWindowLayers);
  } else {
    sliding = new Array(layers).fill(false);
  }
  if (sliding.every((s) => !s)) return { attention: 'dense', window: 0 };
  if (!sliding.every((s) => s)) {
    throw new CheckpointError(f.file, `some layers use sliding-window attention and some full attention (${sliding.map((s) => (s ? 'S' : 'F')).join('')}); one pattern for all layers is supported`);
  }
  if (!f.has('sliding_window')) throw new CheckpointError(f.file, "missing field 'sliding_window' (layer_types asks for sliding-window attention)");
  return { attention: 'window', window: f.int(['sliding_window']) };
}

function activation(f: Fields, name: string, fallback: string, allowed: Record<string, ModelConfig['mlp']>): NonNullable<ModelConfig['mlp']> {
  const act = f.str(name, fallback);
  const mlp = allowed[act];
  if (mlp === undefined) f.unsupported(name, `activation '${act}' is not supported here (expected one of ${Object.keys(allowed).join(', ')})`);
  return mlp;
}

const GELU_NAMES: Record<string, ModelConfig['mlp']> = {
  gelu: 'gelu', gelu_new: 'gelu_tanh', gelu_pytorch_tanh: 'gelu_tanh', gelu_fast: 'gelu_tanh',
};

/**
 * config.json (parsed) -> ModelConfig. `file` names the file in errors.
 * @example
 *   const { modelType, config } = hfConfig(JSON.parse(text), 'tiny-llama/config.json');
 */
export function hfConfig(raw: unknown, file = 'config.json'): { modelType: HfModelType; config: ModelConfig } {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new CheckpointError(file, 'expected a JSON object');
  const f = new Fields(raw as Json, file);
  if (!f.has('model_type')) throw new CheckpointError(file, "missing field 'model_type' (not a Hugging Face model config?)");
  const modelType = f.str('model_type', '');
  if (!(HF_MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw new CheckpointError(file, `field 'model_type' = ${JSON.stringify(modelType)}: unknown model type (supported: ${HF_MODEL_TYPES.join(', ')})`);
  }
  const mt = modelType as HfModelType;
  const base = { k: 0, scoreSlope: 0, hashBuckets: 2 };
  let config: ModelConfig;
  switch (mt) {
    case 'llama':
    case 'mistral':
    case 'qwen2': {
      const dim = f.int(['hidden_size']);
      const heads = f.int(['num_attention_heads']);
      const layers = f.int(['num_hidden_layers']);
      if (f.has('head_dim') && f.int(['head_dim']) * heads !== dim) {
        f.unsupported('head_dim', `a head size other than hidden_size / num_attention_heads (${dim / heads}) is not supported`);
      }
      const rope = ropeSettings(f, { theta: 10000, partial: 1 });
      if (rope.partial !== 1) throw new CheckpointError(file, `partial rotary factor ${rope.partial}: ${mt} models rotate whole heads here`);
      const act = activation(f, 'hidden_act', 'silu', { silu: 'swiglu', swish: 'swiglu' });
      const attnBias = mt === 'llama' ? f.bool('attention_bias', false) : false;
      config = {
        ...base,
        vocabSize: f.int(['vocab_size'], 2),
        layers, dim, heads,
        kvHeads: f.optInt(['num_key_value_heads'], heads),
        ffnDim: f.int(['intermediate_size']),
        context: f.int(['max_position_embeddings']),
        ...llamaAttention(f, mt, layers),
        ropeTheta: rope.theta,
        normEps: f.num(['rms_norm_eps'], 1e-6),
        mlp: act,
        // Qwen2 always has q, k, v biases (and none on o_proj); Llama has attention_bias for all four.
        qkvBias: mt === 'qwen2' || attnBias,
        outBias: attnBias,
        mlpBias: mt === 'llama' ? f.bool('mlp_bias', false) : false,
        tieEmbeddings: f.bool('tie_word_embeddings', false),
      };
      break;
    }
    case 'gpt2': {
      if (f.bool('scale_attn_by_inverse_layer_idx', false)) f.unsupported('scale_attn_by_inverse_layer_idx', 'per-layer attention scaling is not supported');
      if (!f.bool('scale_attn_weights', true)) f.unsupported('scale_attn_weights', 'unscaled attention scores are not supported');
      if (f.bool('add_cross_attention', false)) f.unsupported('add_cross_attention', 'cross-attention is not supported');
      const dim = f.int(['n_embd', 'hidden_size']);
      const heads = f.int(['n_head', 'num_attention_heads']);
      config = {
        ...base,
        vocabSize: f.int(['vocab_size'], 2),
        layers: f.int(['n_layer', 'num_hidden_layers']),
        dim, heads, kvHeads: heads,
        ffnDim: f.optInt(['n_inner'], 4 * dim),
        context: f.int(['n_positions', 'max_position_embeddings', 'n_ctx']),
        attention: 'dense', window: 0,
        ropeTheta: 10000, // unused: learned positions
        normEps: f.num(['layer_norm_epsilon', 'layer_norm_eps'], 1e-5),
        norm: 'layer',
        mlp: activation(f, 'activation_function', 'gelu_new', GELU_NAMES),
        positions: 'learned',
        qkvBias: true, outBias: true, mlpBias: true,
        tieEmbeddings: f.bool('tie_word_embeddings', true),
      };
      break;
    }
    case 'gpt_neox': {
      const dim = f.int(['hidden_size']);
      const heads = f.int(['num_attention_heads']);
      const rope = ropeSettings(f, { theta: 10000, partial: 0.25 });
      const HS = dim / heads;
      // transformers: rotary_ndims = int(head_size * rotary_pct)
      const rotaryDims = Math.floor(HS * rope.partial);
      if (rotaryDims < 2 || rotaryDims % 2 !== 0) {
        throw new CheckpointError(file, `rotary dimensions int(${HS} * ${rope.partial}) = ${rotaryDims}: expected an even number >= 2`);
      }
      const bias = f.bool('attention_bias', true);
      config = {
        ...base,
        vocabSize: f.int(['vocab_size'], 2),
        layers: f.int(['num_hidden_layers']),
        dim, heads, kvHeads: heads,
        ffnDim: f.int(['intermediate_size']),
        context: f.int(['max_position_embeddings']),
        attention: 'dense', window: 0,
        ropeTheta: rope.theta,
        normEps: f.num(['layer_norm_eps', 'layer_norm_epsilon'], 1e-5),
        norm: 'layer',
        mlp: activation(f, 'hidden_act', 'gelu', GELU_NAMES),
        rotaryDims,
        parallelResidual: f.bool('use_parallel_residual', true),
        qkvBias: bias, outBias: bias, mlpBias: true,
        tieEmbeddings: f.bool('tie_word_embeddings', false),
      };
      break;
    }
  }
  // Folders written by `sparsek export` (src/io/export.ts) carry the attention in a "sparsek" block.
  if (f.has('sparsek')) config = { ...config, ...sparsekFields(f) };
  try {
    checkConfig(config);
  } catch (e) {
    throw new CheckpointError(file, `the model it describes is not valid here: ${(e as Error).message}`);
  }
  return { modelType: mt, config };
}

/** The "sparsek" block of an exported config.json: { attention, k, window, scoreSlope }. */
function sparsekFields(f: Fields): Pick<ModelConfig, 'attention' | 'k' | 'window' | 'scoreSlope'> {
  const v = f.raw.sparsek;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) f.unsupported('sparsek', 'expected an object { attention, k, window, scoreSlope }');
  const b = new Fields(v as Json, `${f.file} (field 'sparsek')`);
  const attention = b.str('attention', 'dense');
  if (!(ATTENTION_KINDS as readonly string[]).includes(attention)) b.unsupported('attention', `expected one of ${ATTENTION_KINDS.join(', ')}`);
  return {
    attention: attention as ModelConfig['attention'],
    k: b.optInt(['k'], 0, 0),
    window: b.optInt(['window'], 0, 0),
    scoreSlope: b.num(['scoreSlope'], 0),
  };
}

// ---- weights ------------------------------------------------------------------------------------

/** Every tensor of the folder's safetensors (one file or the shards of an index), by name. */
export interface WeightSet {
  tensors: Map<string, SafeTensor>;
  fileOf: Map<string, string>; // tensor name -> the file it came from, for error messages
  source: string; // model.safetensors or model.safetensors.index.json
}

/** Reads model.safetensors, or every shard named by model.safetensors.index.json. */
export async function readHfWeights(dir: string): Promise<WeightSet> {
  const single = path.join(dir, 'model.safetensors');
  const indexFile = path.join(dir, 'model.safetensors.index.json');
  const tensors = new Map<string, SafeTensor>();
  const fileOf = new Map<string, string>();
  if (fs.existsSync(indexFile)) {
    const index = readJsonObject(indexFile);
    const map = index.weight_map;
    if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new CheckpointError(indexFile, "missing field 'weight_map' (tensor name -> shard file)");
    const wanted = map as Record<string, unknown>;
    const shards = new Set<string>();
    for (const [name, shard] of Object.entries(wanted)) {
      if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\') || shard.startsWith('.')) {
        throw new CheckpointError(indexFile, `weight_map['${name}']: expected a file name in the folder, got ${JSON.stringify(shard)}`);
      }
      shards.add(shard);
    }
    for (const shard of [...shards].sort()) {
      const file = path.join(dir, shard);
      if (!fs.existsSync(file)) throw new CheckpointError(file, `file not found (listed in ${path.basename(indexFile)})`);
      const st = await readSafetensors(file);
      for (const [name, t] of st.tensors) {
        if (tensors.has(name)) throw new CheckpointError(file, `tensor '${name}' is also in ${fileOf.get(name)}`);
        if (wanted[name] !== shard) throw new CheckpointError(file, `tensor '${name}' is here, but the index puts it in ${JSON.stringify(wanted[name] ?? null)}`);
        tensors.set(name, t);
        fileOf.set(name, file);
      }
    }
    for (const [name, shard] of Object.entries(wanted)) {
      if (!tensors.has(name)) throw new CheckpointError(path.join(dir, shard as string), `tensor '${name}' not found (the index says it is here)`);
    }
    return { tensors, fileOf, source: indexFile };
  }
  if (fs.existsSync(single)) {
    const st = await readSafetensors(single);
    for (const [name, t] of st.tensors) {
      tensors.set(name, t);
      fileOf.set(name, single);
    }
    return { tensors, fileOf, source: single };
  }
  const bin = ['pytorch_model.bin', 'pytorch_model.bin.index.json'].find((b) => fs.existsSync(path.join(dir, b)));
  throw new CheckpointError(single, bin
    ? `file not found; the folder has ${bin}, a PyTorch pickle this loader does not read (save with safe_serialization=True)`
    : 'file not found (nor model.safetensors.index.json)');
}

/** Buffers held by the HF checkpoints of older transformers releases; they carry no weights. */
const BUFFER_NAMES = /(\.attn\.bias|\.attn\.masked_bias|\.attention\.bias|\.attention\.masked_bias|rotary_emb\.inv_freq)$/;

/** Reads tensors by HF name, checking shape and dtype, and remembers which ones were used. */
class WeightReader {
  readonly used = new Set<string>();
  constructor(readonly w: WeightSet) {}

  has(name: string): boolean {
    return this.w.tensors.has(name);
  }

  /** The tensor as float32, after checking its shape. */
  get(name: string, shape: number[]): Float32Array {
    const t = this.w.tensors.get(name);
    if (!t) throw new CheckpointError(this.w.source, `missing tensor '${name}' of shape [${shape}]`);
    const file = this.w.fileOf.get(name) ?? this.w.source;
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(file, `tensor '${name}' has shape [${t.shape}], the config needs [${shape}]`);
    }
    if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') {
      throw new CheckpointError(file, `tensor '${name}' has dtype ${t.dtype}; expected F32, F16 or BF16`);
    }
    this.used.add(name);
    return toFloat32(t);
  }

  /** Marks a tensor as read without using it (a tied head stored anyway). */
  skip(name: string): void {
    if (this.w.tensors.has(name)) this.used.add(name);
  }

  /** CheckpointError naming the first tensor that nothing read (and that is not a known buffer). */
  checkAllUsed(modelType: string): void {
    for (const name of this.w.tensors.keys()) {
      if (!this.used.has(name) && !BUFFER_NAMES.test(name)) {
        throw new CheckpointError(this.w.fileOf.get(name) ?? this.w.source, `unexpected tensor '${name}' (not part of a ${modelType} model as its config.json describes it)`);
      }
    }
  }
}

/** dst (rows, cols) = src^T for src (cols, rows): Conv1D (in, out) -> Linear (out, in). */
function transposeInto(dst: Float32Array, src: Float32Array, rows: number, cols: number, srcStride = rows, srcOffset = 0): void {
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) dst[r * cols + c] = src[c * srcStride + srcOffset + r];
}

/**
 * Fills our parameters (allocParams(config)) from a family's HF tensors.
 * @example
 *   const params = allocParams(config); mapHfWeights('gpt2', config, await readHfWeights(dir), params);
 */
export function mapHfWeights(modelType: HfModelType, c: ModelConfig, w: WeightSet, p: Params): void {
  const r = new WeightReader(w);
  const C = c.dim, HS = headSize(c), NH = c.heads, F = c.ffnDim, V = c.vocabSize;
  const copy = (dst: Float32Array, name: string, shape: number[]) => dst.set(r.get(name, shape));
  switch (modelType) {
    case 'llama':
    case 'mistral':
    case 'qwen2': {
      // Our names are Llama's: every parameter is the tensor of the same name.
      for (let i = 0; i < p.specs.length; i++) copy(p.views[i], p.specs[i].name, p.specs[i].shape);
      if (c.tieEmbeddings !== false) r.skip('lm_head.weight');
      break;
    }
    case 'gpt2': {
      const pre = r.has('transformer.wte.weight') ? 'transformer.' : '';
      copy(p.wte, pre + 'wte.weight', [V, C]);
      copy(p.wpe!, pre + 'wpe.weight', [c.context, C]);
      p.layers.forEach((l, i) => {
        const h = `${pre}h.${i}.`;
        copy(l.ln1, h + 'ln_1.weight', [C]);
        copy(l.ln1b!, h + 'ln_1.bias', [C]);
        // c_attn: x (C) @ W (C, 3C) + b, output columns [q | k | v]
        const wqkv = r.get(h + 'attn.c_attn.weight', [C, 3 * C]);
        transposeInto(l.wq, wqkv, C, C, 3 * C, 0);
        transposeInto(l.wk, wqkv, C, C, 3 * C, C);
        transposeInto(l.wv, wqkv, C, C, 3 * C, 2 * C);
        const bqkv = r.get(h + 'attn.c_attn.bias', [3 * C]);
        l.bq!.set(bqkv.subarray(0, C));
        l.bk!.set(bqkv.subarray(C, 2 * C));
        l.bv!.set(bqkv.subarray(2 * C, 3 * C));
        transposeInto(l.wo, r.get(h + 'attn.c_proj.weight', [C, C]), C, C);
        copy(l.bo!, h + 'attn.c_proj.bias', [C]);
        copy(l.ln2, h + 'ln_2.weight', [C]);
        copy(l.ln2b!, h + 'ln_2.bias', [C]);
        transposeInto(l.wup, r.get(h + 'mlp.c_fc.weight', [C, F]), F, C);
        copy(l.bup!, h + 'mlp.c_fc.bias', [F]);
        transposeInto(l.wdown, r.get(h + 'mlp.c_proj.weight', [F, C]), C, F);
        copy(l.bdown!, h + 'mlp.c_proj.bias', [C]);
      });
      copy(p.lnf, pre + 'ln_f.weight', [C]);
      copy(p.lnfb!, pre + 'ln_f.bias', [C]);
      if (p.lmHead) copy(p.lmHead, 'lm_head.weight', [V, C]);
      else r.skip('lm_head.weight');
      break;
    }
    case 'gpt_neox': {
      const pre = 'gpt_neox.';
      copy(p.wte, pre + 'embed_in.weight', [V, C]);
      p.layers.forEach((l, i) => {
        const h = `${pre}layers.${i}.`;
        copy(l.ln1, h + 'input_layernorm.weight', [C]);
        copy(l.ln1b!, h + 'input_layernorm.bias', [C]);
        copy(l.ln2, h + 'post_attention_layernorm.weight', [C]);
        copy(l.ln2b!, h + 'post_attention_layernorm.bias', [C]);
        // query_key_value (3C, C): the output viewed as (NH, 3, HS) -- per head, HS rows of q, of k, of v.
        const wqkv = r.get(h + 'attention.query_key_value.weight', [3 * C, C]);
        const bqkv = l.bq ? r.get(h + 'attention.query_key_value.bias', [3 * C]) : null;
        for (let head = 0; head < NH; head++) {
          const src = head * 3 * HS;
          const dst = head * HS;
          l.wq.set(wqkv.subarray(src * C, (src + HS) * C), dst * C);
          l.wk.set(wqkv.subarray((src + HS) * C, (src + 2 * HS) * C), dst * C);
          l.wv.set(wqkv.subarray((src + 2 * HS) * C, (src + 3 * HS) * C), dst * C);
          if (bqkv && l.bq && l.bk && l.bv) {
            l.bq.set(bqkv.subarray(src, src + HS), dst);
            l.bk.set(bqkv.subarray(src + HS, src + 2 * HS), dst);
            l.bv.set(bqkv.subarray(src + 2 * HS, src + 3 * HS), dst);
          }
        }
        copy(l.wo, h + 'attention.dense.weight', [C, C]);
        if (l.bo) copy(l.bo, h + 'attention.dense.bias', [C]);
        copy(l.wup, h + 'mlp.dense_h_to_4h.weight', [F, C]);
        copy(l.bup!, h + 'mlp.dense_h_to_4h.bias', [F]);
        copy(l.wdown, h + 'mlp.dense_4h_to_h.weight', [C, F]);
        copy(l.bdown!, h + 'mlp.dense_4h_to_h.bias', [C]);
      });
      copy(p.lnf, pre + 'final_layer_norm.weight', [C]);
      copy(p.lnfb!, pre + 'final_layer_norm.bias', [C]);
      if (p.lmHead) copy(p.lmHead, 'embed_out.weight', [V, C]);
      else r.skip('embed_out.weight');
      break;
    }
  }
  r.checkAllUsed(modelType);
}

// ---- tokenizer ----------------------------------------------------------------------------------

/**
 * A tokenizer.json run by @huggingface/tokenizers, behind our Tokenizer interface. encode() adds
 * the special tokens of the file's post-processor (a BOS, say), as transformers' tokenizer(text) does.
 */
export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  private readonly tok: HfTokenizerImpl;

  constructor(private readonly json: object, readonly config: object = {}) {
    this.tok = new HfTokenizerImpl(json, config);
    let max = -1;
    for (const id of this.tok.get_vocab(true).values()) max = Math.max(max, id);
    this.vocabSize = max + 1;
  }

  encode(text: string): number[] {
    return this.tok.encode(text).ids;
  }

  decode(ids: ArrayLike<number>): string {
    // The library refuses an empty list; the empty sequence is the empty text.
    return ids.length === 0 ? '' : this.tok.decode(Array.from(ids));
  }

  toJSON(): object {
    return this.json;
  }
}

/** tokenizer.json (+ tokenizer_config.json when present), or null when the folder has none. */
export function loadHfTokenizer(dir: string): HfTokenizer | null {
  const file = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(file)) return null;
  const json = readJsonObject(file);
  const cfgFile = path.join(dir, 'tokenizer_config.json');
  const cfg = fs.existsSync(cfgFile) ? readJsonObject(cfgFile) : {};
  try {
    return new HfTokenizer(json, cfg);
  } catch (e) {
    throw new CheckpointError(file, `cannot build the tokenizer: ${(e as Error).message}`);
  }
}

// ---- the folder ---------------------------------------------------------------------------------

/**
 * Reads a Hugging Face model folder: config.json, the safetensors weights, tokenizer.json.
 * @example
 *   const hf = await loadHfFolder('models/tiny-llama');
 *   hf.config.vocabSize; hf.tokenizer?.encode('Hello');
 */
export async function loadHfFolder(dir: string): Promise<HfCheckpoint> {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new CheckpointError(dir, 'not a folder');
  const cfgFile = path.join(dir, 'config.json');
  const { modelType, config } = hfConfig(readJsonObject(cfgFile), cfgFile);
  const weights = await readHfWeights(dir);
  const params = allocParams(config);
  mapHfWeights(modelType, config, weights, params);
  const tokenizer = loadHfTokenizer(dir);
  if (tokenizer && tokenizer.vocabSize > config.vocabSize) {
    throw new CheckpointError(path.join(dir, 'tokenizer.json'), `vocabulary of ${tokenizer.vocabSize} tokens exceeds the model's ${config.vocabSize}`);
  }
  return { modelType, config, params, tokenizer };
}
