// Token-by-token decoding on WebGPU with the constant-memory cache (SPEC.md section 5): the
// WebGPU counterpart of src/model/decode.ts and src/cuda/decode.ts, with the same cache logic.
//
// Device memory, allocated once: per layer, kc and vc (NKV, S, HS) with S = ring + K slots, the
// first `ring` (= W) the window's ring buffer, the other K the selected set; and gates (NKV, K).
// dense: the ring holds every position and grows by doubling (for comparison only).
// Host side: per (layer, KV head) the CPU's CausalSelector, the ring's scores and the selected
// slots' positions and scores; it decides admissions and evictions and computes the gates.
//
// One step records the whole layer list and reads back once: the logits and every layer's NKV
// new scores (2 + NKV L floats more than the logits). The selector needs score u_j when j leaves
// the window, W steps after it was computed, so with W > 0 no step waits for its own scores.
// With W = 0 the new position is itself the candidate, and each layer reads its scores back
// before its attention: L round trips per token, correct but slower.
// Prefill goes through the same step, token by token. Not here: batched prefill, sampling
// (model/generate.ts sampleLogits), fp16.
/// <reference types="@webgpu/types" />

import { CausalSelector } from '../cpu/kernels/selection.js';
import { ropeTables } from '../cpu/kernels/rope.js';
import { ArgumentError } from '../core/errors.js';
import type { CacheStats } from '../model/decode.js';
import { ModelConfig, headSize } from '../model/config.js';
import type { GeluForm } from '../backend.js';
import type { GpuTensor } from './runtime.js';
import type { WebGpuModel } from './model.js';

/** One layer's device cache and its host bookkeeping. */
interface LayerCache {
  kc: GpuTensor; // (NKV, S, HS)
  vc: GpuTensor; // (NKV, S, HS)
  gates: GpuTensor; // (NKV, K)
  ringU: Float32Array; // (NKV, W) scores of the ring's positions (sparsek)
  selPos: Int32Array; // (NKV, K)
  selU: Float32Array; // (NKV, K)
  selectors: CausalSelector[]; // (NKV), sparsek only
}

export class WebGpuDecoder {
  private readonly layers: LayerCache[] = [];
  private ring: number; // ring slots per head: W, or the dense capacity
  private readonly K: number; // selected slots per head (0 unless sparsek)
  private selCount = 0;
  private pos = 0;
  private keysLastStep = 0;
  private disposed = false;
  // One-token scratch.
  private readonly id: GpuTensor; // (1) u32
  private readonly cos: GpuTensor; // (R/2)
  private readonly sin: GpuTensor; // (R/2)
  private readonly x: GpuTensor; // (C)
  private readonly x2: GpuTensor; // (C)
  private readonly ln: GpuTensor; // (C)
  private readonly q: GpuTensor; // (NH*HS)
  private readonly k: GpuTensor; // (NKV*HS)
  private readonly v: GpuTensor; // (NKV*HS)
  private readonly u: GpuTensor; // (NKV)
  private readonly att: GpuTensor; // (NH*HS)
  private readonly gate: GpuTensor; // (F)
  private readonly up: GpuTensor; // (F)
  private readonly h: GpuTensor; // (F)
  private readonly out: GpuTensor; // (V + L*NKV): logits, then each layer's scores
  private readonly hostGates: Float32Array; // (NKV, K)

  /** A decoder on the weights and kernels of m; supportCap as in SPEC section 5 (default 4 K). */
  constructor(readonly m: WebGpuModel, opts: { supportCap?: number } = {}) {
    const c = m.config;
    if (!WebGpuDecoder.supports(c)) throw new ArgumentError('config.attention', 'sparsek, window or dense for cached decoding', c.attention);
    const rt = m.rt;
    const HS = headSize(c);
    const NKV = c.kvHeads;
    this.K = c.attention === 'sparsek' ? c.k : 0;
    this.ring = c.attention === 'dense' ? 256 : c.window;
    const supportCap = Math.max(opts.supportCap ?? 4 * c.k, c.k + 1);
    for (let l = 0; l < c.layers; l++) {
      const S = this.ring + this.K;
      this.layers.push({
        kc: rt.tensor(NKV * S * HS, `kc${l}`),
        vc: rt.tensor(NKV * S * HS, `vc${l}`),
        gates: rt.tensor(NKV * this.K, `gates${l}`),
        ringU: new Float32Array(c.attention === 'sparsek' ? NKV * c.window : 0),
        selPos: new Int32Array(NKV * this.K),
        selU: new Float32Array(NKV * this.K),
        selectors: c.attention === 'sparsek' ? Array.from({ length: NKV }, () => new CausalSelector(c.k, supportCap)) : [],
      });
    }
    const R = m.arch.rotaryDims;
    const f = (n: number, label: string) => rt.tensor(n, label);
    this.id = f(1, 'id');
    this.cos = f(R / 2, 'rope cos');
    this.sin = f(R / 2, 'rope sin');
    this.x = f(c.dim, 'x');
    this.x2 = f(c.dim, 'x2');
    this.ln = f(c.dim, 'ln');
    this.q = f(c.heads * HS, 'q');
    this.k = f(NKV * HS, 'k');
    this.v = f(NKV * HS, 'v');
    this.u = f(NKV, 'u');
    this.att = f(c.heads * HS, 'att');
    this.gate = f(c.ffnDim, 'gate');
    this.up = f(c.ffnDim, 'up');
    this.h = f(c.ffnDim, 'h');
    this.out = f(c.vocabSize + c.layers * NKV, 'step out');
    this.hostGates = new Float32Array(NKV * this.K);
  }

  /** Whether a config has a cached form: sparsek, window or dense attention. */
  static supports(c: ModelConfig): boolean {
    return c.attention === 'sparsek' || c.attention === 'window' || c.attention === 'dense';
  }

  /** Tokens consumed so far. */
  get length(): number {
    return this.pos;
  }

  /** Bytes of the device K/V cache and gates plus the host's selection state (scores, positions, selectors). */
  stats(): CacheStats {
    let bytes = 0;
    let capHits = 0;
    for (const L of this.layers) {
      bytes += 4 * (L.kc.length + L.vc.length + L.gates.length);
      bytes += L.ringU.byteLength + L.selPos.byteLength + L.selU.byteLength;
      for (const s of L.selectors) {
        bytes += s.bytes;
        capHits += s.capHits;
      }
    }
    return { bytes, capHits, keysLastStep: this.keysLastStep };
  }

  /** Consumes token id at the next position; resolves to the logits (V) for the token after it. */
  async step(id: number): Promise<Float32Array> {
    if (this.disposed) throw new ArgumentError('decoder', 'a decoder that was not disposed', 'disposed');
    const m = this.m;
    const c = m.config;
    const ar = m.arch;
    const rt = m.rt;
    const o = m.ops;
    const w = m.w;
    if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) throw new ArgumentError('id', `a token id in [0, ${c.vocabSize})`, id);
    const i = this.pos;
    if (ar.positions === 'learned' && i >= c.context) {
      throw new ArgumentError('position', `below context (${c.context}): learned position embeddings end there`, i);
    }
    const C = c.dim;
    const HS = headSize(c);
    const NH = c.heads;
    const NKV = c.kvHeads;
    const Fw = c.ffnDim;
    const V = c.vocabSize;
    const W = c.window;
    const sparse = c.attention === 'sparsek';
    const gelu: GeluForm = ar.mlp === 'gelu' ? 'erf' : 'tanh';
    if (c.attention === 'dense' && i === this.ring) this.growRing();
    const S = this.ring + this.K;

    // Host side first: with W > 0, candidate i - W's admission needs only scores read back by
    // earlier steps, so every layer's selection and gates are settled before any work is recorded.
    const moves: { l: number; h: number; slot: number; j: number }[] = [];
    if (sparse && W > 0 && i - W >= 0) {
      for (let l = 0; l < c.layers; l++) {
        for (let h = 0; h < NKV; h++) {
          const L = this.layers[l];
          const j = i - W;
          const slot = this.admit(L, h, j, L.ringU[h * W + (j % W)]);
          if (slot >= 0) moves.push({ l, h, slot, j });
        }
        this.writeGates(this.layers[l]);
      }
    }
    rt.write(this.id, Uint32Array.of(id));
    if (ar.rotaryDims > 0) {
      const tab = ropeTables(1, ar.rotaryDims, c.ropeTheta, i);
      rt.write(this.cos, tab.cos);
      rt.write(this.sin, tab.sin);
    }

    const nRing = c.attention === 'dense' ? i + 1 : Math.min(W, i + 1);
    this.keysLastStep = 0;
    o.embedding(this.x, this.id, w.wte, w.wpe, 1, C, i);
    for (let l = 0; l < c.layers; l++) {
      const Lw = w.layers[l];
      const L = this.layers[l];
      o.norm(this.ln, this.x, Lw.ln1, Lw.ln1b, 1, C, c.normEps);
      o.matmul(this.q, this.ln, Lw.wq, Lw.bq, 1, C, NH * HS);
      o.matmul(this.k, this.ln, Lw.wk, Lw.bk, 1, C, NKV * HS);
      o.matmul(this.v, this.ln, Lw.wv, Lw.bv, 1, C, NKV * HS);
      if (ar.positions === 'rope') {
        // With one position the (1, H*HS) row is the (H, 1, HS) heads layout.
        o.rope(this.q, this.cos, this.sin, 1, NH, HS, ar.rotaryDims);
        o.rope(this.k, this.cos, this.sin, 1, NKV, HS, ar.rotaryDims);
      }
      if (Lw.wscore) {
        o.matmul(this.u, this.ln, Lw.wscore, null, 1, C, NKV);
        rt.copy(this.out, V + l * NKV, this.u, 0, NKV);
      }
      if (sparse && W === 0) {
        // The candidate is position i itself: its scores are needed now (one round trip).
        const u = await rt.read(this.u, NKV);
        for (let h = 0; h < NKV; h++) {
          const slot = this.admit(L, h, i, Math.fround(u[h] + c.scoreSlope * i));
          if (slot < 0) continue;
          rt.copy(L.kc, (h * S + this.ring + slot) * HS, this.k, h * HS, HS);
          rt.copy(L.vc, (h * S + this.ring + slot) * HS, this.v, h * HS, HS);
        }
        this.writeGates(L);
      }
      // Candidate i - W moves from its ring slot to its selected slot before position i overwrites that ring slot.
      for (const mv of moves) if (mv.l === l) o.kvMove(L.kc, L.vc, (mv.h * S + this.ring + mv.slot) * HS, (mv.h * S + (mv.j % W)) * HS, HS);
      if (this.ring > 0) {
        const slot = c.attention === 'dense' ? i : i % W;
        for (let h = 0; h < NKV; h++) {
          rt.copy(L.kc, (h * S + slot) * HS, this.k, h * HS, HS);
          rt.copy(L.vc, (h * S + slot) * HS, this.v, h * HS, HS);
        }
      }
      o.decodeAttention(this.att, this.q, L.kc, L.vc, L.gates, NH, NKV, HS, this.K, S, this.ring, nRing, this.selCount);
      this.keysLastStep += NH * (nRing + this.selCount);
      o.matmul(this.x2, this.att, Lw.wo, Lw.bo, 1, NH * HS, C);
      o.add(this.x2, this.x, C);
      o.norm(this.ln, ar.parallelResidual ? this.x : this.x2, Lw.ln2, Lw.ln2b, 1, C, c.normEps);
      if (Lw.wgate) {
        o.matmul(this.gate, this.ln, Lw.wgate, Lw.bgate, 1, C, Fw);
        o.matmul(this.up, this.ln, Lw.wup, Lw.bup, 1, C, Fw);
        o.swiglu(this.h, this.gate, this.up, Fw);
      } else {
        o.matmul(this.up, this.ln, Lw.wup, Lw.bup, 1, C, Fw);
        o.gelu(this.h, this.up, Fw, gelu);
      }
      o.matmul(this.x, this.h, Lw.wdown, Lw.bdown, 1, Fw, C);
      o.add(this.x, this.x2, C);
    }
    o.norm(this.ln, this.x, w.lnf, w.lnfb, 1, C, c.normEps);
    o.matmul(this.out, this.ln, w.lmHead ?? w.wte, null, 1, C, V);
    const back = await rt.read(this.out, V + (sparse ? c.layers * NKV : 0));
    if (sparse && W > 0) {
      // Scores as the CPU forms them: float32 of (u + eps i).
      for (let l = 0; l < c.layers; l++) {
        for (let h = 0; h < NKV; h++) this.layers[l].ringU[h * W + (i % W)] = Math.fround(back[V + l * NKV + h] + c.scoreSlope * i);
      }
    }
    this.pos++;
    return back.subarray(0, V);
  }

  /**
   * Offers candidate j (score uj) to the selector of KV head h: returns the selected slot its
   * K/V must go to, or -1 when it is not taken. As the CPU decoder's admit().
   */
  private admit(L: LayerCache, h: number, j: number, uj: number): number {
    const K = this.K;
    const sel = L.selectors[h];
    sel.push(uj, j);
    this.selCount = sel.selected().length;
    if (!sel.lastAccepted) return -1;
    const slot = sel.lastEvicted >= 0 ? L.selPos.subarray(h * K, (h + 1) * K).indexOf(sel.lastEvicted) : this.selCount - 1;
    L.selPos[h * K + slot] = j;
    L.selU[h * K + slot] = uj;
    return slot;
  }

  /** gates[h, s] = clip(selU - tau_h, 0, 1), computed in float64 as on the CPU, to the device. */
  private writeGates(L: LayerCache): void {
    const K = this.K;
    if (K === 0) return;
    for (let h = 0; h < L.selectors.length; h++) {
      const tau = L.selectors[h].tau;
      for (let s = 0; s < this.selCount; s++) {
        const d = L.selU[h * K + s] - tau;
        this.hostGates[h * K + s] = d <= 0 ? 0 : d >= 1 ? 1 : d;
      }
    }
    this.m.rt.write(L.gates, this.hostGates);
  }

  /** dense only: doubles the ring, keeping each head's positions. */
  private growRing(): void {
    const c = this.m.config;
    const rt = this.m.rt;
    const HS = headSize(c);
    const cap = this.ring * 2;
    for (const [l, L] of this.layers.entries()) {
      const kc = rt.tensor(c.kvHeads * cap * HS, `kc${l}`);
      const vc = rt.tensor(c.kvHeads * cap * HS, `vc${l}`);
      for (let h = 0; h < c.kvHeads; h++) {
        rt.copy(kc, h * cap * HS, L.kc, h * this.ring * HS, this.ring * HS);
        rt.copy(vc, h * cap * HS, L.vc, h * this.ring * HS, this.ring * HS);
      }
      rt.submit();
      rt.free(L.kc);
      rt.free(L.vc);
      L.kc = kc;
      L.vc = vc;
    }
    this.ring = cap;
  }

  /** Frees the decoder's device memory (the model's weights stay). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const rt = this.m.rt;
    for (const L of this.layers) for (const t of [L.kc, L.vc, L.gates]) rt.free(t);
    for (const t of [this.id, this.cos, this.sin, this.x, this.x2, this.ln, this.q, this.k, this.v, this.u, this.att, this.gate, this.up, this.h, this.out]) rt.free(t);
  }
}
