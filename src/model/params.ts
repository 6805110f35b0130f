// Parameter layout of the decoder: named tensors in one flat buffer, so the optimizer, gradient
// clipping and checkpoints see a single buffer while layers see named views. The buffer type is
// the backend's (Float32Array on the CPU, device memory on CUDA).
// Names follow Hugging Face Llama, so exported folders read like the models users know; the other
// architectures of config.ts reuse them (a GELU MLP's first projection is mlp.up_proj, LayerNorm
// biases are input_layernorm.bias, ...) plus model.embed_positions.weight (learned positions) and
// lm_head.weight (untied head). src/io/hf.ts maps each family's own names onto these.

import { Rng } from '../core/random.js';
import type { Backend } from '../backend.js';
import { cpuBackend } from '../cpu/backend.js';
import { ModelConfig, arch, headSize } from './config.js';

export interface ParamSpec {
  name: string;
  shape: number[];
  init: 'normal' | 'residual' | 'ones' | 'zeros';
  decay: boolean; // AdamW weight decay applies to matrices only
}

export interface LayerParams<Buf = Float32Array> {
  ln1: Buf; // (C)
  ln1b: Buf | null; // (C), LayerNorm only
  wq: Buf; // (NH*HS, C)
  wk: Buf; // (NKV*HS, C)
  wv: Buf; // (NKV*HS, C)
  bq: Buf | null; // (NH*HS), qkvBias only
  bk: Buf | null; // (NKV*HS)
  bv: Buf | null; // (NKV*HS)
  wscore: Buf | null; // (NKV, C), sparsek only: SPEC section 2
  wo: Buf; // (C, NH*HS)
  bo: Buf | null; // (C), outBias only
  ln2: Buf; // (C)
  ln2b: Buf | null; // (C), LayerNorm only
  wgate: Buf | null; // (F, C), SwiGLU only
  bgate: Buf | null; // (F), SwiGLU with mlpBias only
  wup: Buf; // (F, C)
  bup: Buf | null; // (F), mlpBias only
  wdown: Buf; // (C, F)
  bdown: Buf | null; // (C), mlpBias only
}

export interface Params<Buf = Float32Array> {
  flat: Buf;
  specs: ParamSpec[];
  views: Buf[]; // views[i] is specs[i]'s slice of flat
  wte: Buf; // (V, C), also the output head when tied
  wpe: Buf | null; // (context, C), learned positions only
  layers: LayerParams<Buf>[];
  lnf: Buf; // (C)
  lnfb: Buf | null; // (C), LayerNorm only
  lmHead: Buf | null; // (V, C), untied head only
}

export function paramSpecs(c: ModelConfig): ParamSpec[] {
  const C = c.dim;
  const HS = headSize(c);
  const a = arch(c);
  const layerNorm = a.norm === 'layer';
  const specs: ParamSpec[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocabSize, C], init: 'normal', decay: true }];
  if (a.positions === 'learned') specs.push({ name: 'model.embed_positions.weight', shape: [c.context, C], init: 'normal', decay: true });
  const bias = (name: string, n: number): ParamSpec => ({ name, shape: [n], init: 'zeros', decay: false });
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}.`;
    specs.push({ name: p + 'input_layernorm.weight', shape: [C], init: 'ones', decay: false });
    if (layerNorm) specs.push(bias(p + 'input_layernorm.bias', C));
    specs.push(
      { name: p + 'self_attn.q_proj.weight', shape: [c.heads * HS, C], init: 'normal', decay: true },
      { name: p + 'self_attn.k_proj.weight', shape: [c.kvHeads * HS, C], init: 'normal', decay: true },
      { name: p + 'self_attn.v_proj.weight', shape: [c.kvHeads * HS, C], init: 'normal', decay: true },
    );
    if (a.qkvBias) {
      specs.push(bias(p + 'self_attn.q_proj.bias', c.heads * HS), bias(p + 'self_attn.k_proj.bias', c.kvHeads * HS), bias(p + 'self_attn.v_proj.bias', c.kvHeads * HS));
    }
    if (c.attention === 'sparsek') {
      // Zero init (SPEC section 2): selection starts from position order alone.
      specs.push({ name: p + 'self_attn.score_proj.weight', shape: [c.kvHeads, C], init: 'zeros', decay: false });
    }
    specs.push({ name: p + 'self_attn.o_proj.weight', shape: [C, c.heads * HS], init: 'residual', decay: true });
    if (a.outBias) specs.push(bias(p + 'self_attn.o_proj.bias', C));
    specs.push({ name: p + 'post_attention_layernorm.weight', shape: [C], init: 'ones', decay: false });
    if (layerNorm) specs.push(bias(p + 'post_attention_layernorm.bias', C));
    if (a.mlp === 'swiglu') {
      specs.push({ name: p + 'mlp.gate_proj.weight', shape: [c.ffnDim, C], init: 'normal', decay: true });
      if (a.mlpBias) specs.push(bias(p + 'mlp.gate_proj.bias', c.ffnDim));
    }
    specs.push({ name: p + 'mlp.up_proj.weight', shape: [c.ffnDim, C], init: 'normal', decay: true });
    if (a.mlpBias) specs.push(bias(p + 'mlp.up_proj.bias', c.ffnDim));
    specs.push({ name: p + 'mlp.down_proj.weight', shape: [C, c.ffnDim], init: 'residual', decay: true });
    if (a.mlpBias) specs.push(bias(p + 'mlp.down_proj.bias', C));
  }
  specs.push({ name: 'model.norm.weight', shape: [C], init: 'ones', decay: false });
  if (layerNorm) specs.push(bias('model.norm.bias', C));
  if (!a.tieEmbeddings) specs.push({ name: 'lm_head.weight', shape: [c.vocabSize, C], init: 'normal', decay: true });
  return specs;
}

export function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Allocates the parameters (zeros) on the CPU, with their named views. */
export function allocParams(c: ModelConfig): Params {
  return allocParamsOn(c, cpuBackend);
}

/** Allocates the parameters (zeros) in a backend's memory, with their named views. */
export function allocParamsOn<Buf>(c: ModelConfig, be: Pick<Backend<Buf, unknown>, 'alloc' | 'view'>): Params<Buf> {
  const specs = paramSpecs(c);
  const flat = be.alloc(specs.reduce((n, s) => n + numel(s.shape), 0));
  const views: Buf[] = [];
  let off = 0;
  for (const s of specs) {
    views.push(be.view(flat, off, numel(s.shape)));
    off += numel(s.shape);
  }
  const byName = new Map(specs.map((s, i) => [s.name, views[i]]));
  const get = (name: string) => byName.get(name)!;
  const opt = (name: string) => byName.get(name) ?? null;
  const layers: LayerParams<Buf>[] = [];
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}.`;
    layers.push({
      ln1: get(p + 'input_layernorm.weight'),
      ln1b: opt(p + 'input_layernorm.bias'),
      wq: get(p + 'self_attn.q_proj.weight'),
      wk: get(p + 'self_attn.k_proj.weight'),
      wv: get(p + 'self_attn.v_proj.weight'),
      bq: opt(p + 'self_attn.q_proj.bias'),
      bk: opt(p + 'self_attn.k_proj.bias'),
      bv: opt(p + 'self_attn.v_proj.bias'),
      wscore: opt(p + 'self_attn.score_proj.weight'),
      wo: get(p + 'self_attn.o_proj.weight'),
      bo: opt(p + 'self_attn.o_proj.bias'),
      ln2: get(p + 'post_attention_layernorm.weight'),
      ln2b: opt(p + 'post_attention_layernorm.bias'),
      wgate: opt(p + 'mlp.gate_proj.weight'),
      bgate: opt(p + 'mlp.gate_proj.bias'),
      wup: get(p + 'mlp.up_proj.weight'),
      bup: opt(p + 'mlp.up_proj.bias'),
      wdown: get(p + 'mlp.down_proj.weight'),
      bdown: opt(p + 'mlp.down_proj.bias'),
    });
  }
  return {
    flat, specs, views, wte: get('model.embed_tokens.weight'), wpe: opt('model.embed_positions.weight'), layers,
    lnf: get('model.norm.weight'), lnfb: opt('model.norm.bias'), lmHead: opt('lm_head.weight'),
  };
}

/** GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2L). */
export function initParams(p: Params, c: ModelConfig, seed: number): void {
  const rng = new Rng(seed);
  const residualStd = 0.02 / Math.sqrt(2 * c.layers);
  p.specs.forEach((s, i) => {
    const v = p.views[i];
    switch (s.init) {
      case 'ones': v.fill(1); break;
      case 'zeros': v.fill(0); break;
      case 'normal': for (let j = 0; j < v.length; j++) v[j] = 0.02 * rng.normal(); break;
      case 'residual': for (let j = 0; j < v.length; j++) v[j] = residualStd * rng.normal(); break;
    }
  });
}
