// Parameter layout of the decoder: named tensors in one flat buffer, so the optimizer, gradient
// clipping and checkpoints see a single buffer while layers see named views. The buffer type is
// the backend's (Float32Array on the CPU, device memory on CUDA).
// Names follow Hugging Face Llama, so exported folders read like the models users know.

import { Rng } from '../core/random.js';
import type { Backend } from '../backend.js';
import { cpuBackend } from '../cpu/backend.js';
import { ModelConfig, headSize } from './config.js';

export interface ParamSpec {
  name: string;
  shape: number[];
  init: 'normal' | 'residual' | 'ones' | 'zeros';
  decay: boolean; // AdamW weight decay applies to matrices only
}

export interface LayerParams<Buf = Float32Array> {
  ln1: Buf; // (C)
  wq: Buf; // (NH*HS, C)
  wk: Buf; // (NKV*HS, C)
  wv: Buf; // (NKV*HS, C)
  wscore: Buf | null; // (NKV, C), sparsek only: SPEC section 2
  wo: Buf; // (C, NH*HS)
  ln2: Buf; // (C)
  wgate: Buf; // (F, C)
  wup: Buf; // (F, C)
  wdown: Buf; // (C, F)
}

export interface Params<Buf = Float32Array> {
  flat: Buf;
  specs: ParamSpec[];
  views: Buf[]; // views[i] is specs[i]'s slice of flat
  wte: Buf; // (V, C), also the output head (tied)
  layers: LayerParams<Buf>[];
  lnf: Buf; // (C)
}

export function paramSpecs(c: ModelConfig): ParamSpec[] {
  const C = c.dim;
  const HS = headSize(c);
  const specs: ParamSpec[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocabSize, C], init: 'normal', decay: true }];
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}.`;
    specs.push(
      { name: p + 'input_layernorm.weight', shape: [C], init: 'ones', decay: false },
      { name: p + 'self_attn.q_proj.weight', shape: [c.heads * HS, C], init: 'normal', decay: true },
      { name: p + 'self_attn.k_proj.weight', shape: [c.kvHeads * HS, C], init: 'normal', decay: true },
      { name: p + 'self_attn.v_proj.weight', shape: [c.kvHeads * HS, C], init: 'normal', decay: true },
    );
    if (c.attention === 'sparsek') {
      // Zero init (SPEC section 2): selection starts from position order alone.
      specs.push({ name: p + 'self_attn.score_proj.weight', shape: [c.kvHeads, C], init: 'zeros', decay: false });
    }
    specs.push(
      { name: p + 'self_attn.o_proj.weight', shape: [C, c.heads * HS], init: 'residual', decay: true },
      { name: p + 'post_attention_layernorm.weight', shape: [C], init: 'ones', decay: false },
      { name: p + 'mlp.gate_proj.weight', shape: [c.ffnDim, C], init: 'normal', decay: true },
      { name: p + 'mlp.up_proj.weight', shape: [c.ffnDim, C], init: 'normal', decay: true },
      { name: p + 'mlp.down_proj.weight', shape: [C, c.ffnDim], init: 'residual', decay: true },
    );
  }
  specs.push({ name: 'model.norm.weight', shape: [C], init: 'ones', decay: false });
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
  const layers: LayerParams<Buf>[] = [];
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}.`;
    layers.push({
      ln1: get(p + 'input_layernorm.weight'),
      wq: get(p + 'self_attn.q_proj.weight'),
      wk: get(p + 'self_attn.k_proj.weight'),
      wv: get(p + 'self_attn.v_proj.weight'),
      wscore: byName.get(p + 'self_attn.score_proj.weight') ?? null,
      wo: get(p + 'self_attn.o_proj.weight'),
      ln2: get(p + 'post_attention_layernorm.weight'),
      wgate: get(p + 'mlp.gate_proj.weight'),
      wup: get(p + 'mlp.up_proj.weight'),
      wdown: get(p + 'mlp.down_proj.weight'),
    });
  }
  return { flat, specs, views, wte: get('model.embed_tokens.weight'), layers, lnf: get('model.norm.weight') };
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
