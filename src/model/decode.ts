// Token-by-token decoding with a per-layer, per-KV-head cache (SPEC.md section 5).
//
// sparsek: a ring of the last W positions' K/V, the selected set (at most K entries of K/V, score
//   and position) and the CausalSelector's scalar support list. When position i - W leaves the
//   window it becomes a candidate; if the selector takes it, its K/V move from the ring into the
//   slot of the entry it evicted. Evicted entries never return (tau only rises), so K/V memory is
//   (W + K) entries at any length, allocated once here.
// window: the ring alone.  dense: K/V for every position (grows, for comparison).
// Other kinds have no cache form: Generator recomputes the full forward for them. Only the Llama
// block is decoded here (RMSNorm, SwiGLU, full RoPE; biases and an untied head allowed: Llama,
// Qwen2, Mistral); GPT-2 and NeoX imports have no cached form yet and are recomputed too.
//
// Equivalence with the full forward (same logits up to float32 rounding) is a test, not a hope.
//
// prefill(ids) consumes a prompt with one batched forward of Gpt (gpt.ts) instead of a step per
// token: the forward's k (after RoPE), v and scores u are replayed through admit(), position by
// position, which leaves exactly the cache the steps would have left (rings, selected slots,
// gates' scores, selector state, dense growth). The forward's selection is exact (no support
// cap), so the batch stops at the first step where a selector hits supportCap (after that the
// capped decoder and the exact forward part ways); it also stops at prefillMax tokens (default
// `context`, the batch length the model is built for: the forward's activations, backward scratch
// included, grow as T (L C + V)). Tokens after either point are stepped one by one: still
// exact, only slower. (A chunked prefill that carries the cache past prefillMax would need an
// attention over cache + chunk, which Gpt's forward does not have.)

import { matmulForward } from '../cpu/kernels/matmul.js';
import { rmsnormForward } from '../cpu/kernels/norm.js';
import { ropeForward } from '../cpu/kernels/rope.js';
import { swigluForward } from '../cpu/kernels/activation.js';
import { CausalSelector } from '../cpu/kernels/selection.js';
import { ArgumentError } from '../core/errors.js';
import { checkInt } from '../core/check.js';
import { ModelConfig, headSize, isLlamaBlock } from './config.js';
import { Gpt } from './gpt.js';
import { Params } from './params.js';

/** K/V storage of one (layer, KV head): slot-addressed vectors with positions. */
class KvSlots {
  k: Float32Array; // (capacity, HS)
  v: Float32Array; // (capacity, HS)
  pos: Int32Array; // (capacity)
  u: Float32Array; // (capacity) scores (sparsek selected set only)
  constructor(public capacity: number, readonly HS: number) {
    this.k = new Float32Array(capacity * HS);
    this.v = new Float32Array(capacity * HS);
    this.pos = new Int32Array(capacity);
    this.u = new Float32Array(capacity);
  }
  /** Doubles the capacity: dense attention only. */
  grow(): void {
    const n = new KvSlots(this.capacity * 2, this.HS);
    n.k.set(this.k);
    n.v.set(this.v);
    n.pos.set(this.pos);
    n.u.set(this.u);
    Object.assign(this, { capacity: n.capacity, k: n.k, v: n.v, pos: n.pos, u: n.u });
  }
  write(slot: number, pos: number, k: ArrayLike<number>, kOff: number, v: ArrayLike<number>, vOff: number, u = 0): void {
    const HS = this.HS;
    for (let d = 0; d < HS; d++) {
      this.k[slot * HS + d] = k[kOff + d];
      this.v[slot * HS + d] = v[vOff + d];
    }
    this.pos[slot] = pos;
    this.u[slot] = u;
  }
  get bytes(): number {
    return this.k.byteLength + this.v.byteLength + this.pos.byteLength + this.u.byteLength;
  }
}

interface HeadCache {
  ring: KvSlots | null; // window (sparsek, window) or everything (dense)
  sel: KvSlots | null; // selected set (sparsek)
  selCount: number;
  selector: CausalSelector | null;
}

export interface CacheStats {
  bytes: number; // K/V, positions, scores and selector state, summed over layers and heads
  capHits: number; // times a support list hit supportCap (0 means decoding is exact)
  keysLastStep: number; // (query head, key) pairs scored by the last step: the work per token
}

/** Decodes one token at a time; step() returns the logits (V) for the next token. */
export class Decoder {
  private readonly heads: HeadCache[][]; // [layer][kv head]
  private pos = 0;
  // One-token scratch: x, norms, projections, MLP.
  private readonly x: Float32Array;
  private readonly ln: Float32Array;
  private readonly rstd = new Float32Array(1);
  private readonly q: Float32Array;
  private readonly qr: Float32Array;
  private readonly k: Float32Array;
  private readonly kr: Float32Array;
  private readonly v: Float32Array;
  private readonly u: Float32Array;
  private readonly att: Float32Array;
  private readonly tmp: Float32Array;
  private readonly gate: Float32Array;
  private readonly up: Float32Array;
  private readonly h: Float32Array;
  private scores: Float64Array;
  private readonly acc: Float64Array;
  private keysLastStep = 0;
  private readonly prefillMax: number;
  readonly logits: Float32Array;

  /**
   * supportCap: bound of each selector's support list (default 4K; Infinity keeps decoding exact).
   * prefillMax: longest prefix prefill() runs as one batched forward (default context).
   */
  constructor(readonly config: ModelConfig, readonly params: Params, opts: { supportCap?: number; prefillMax?: number } = {}) {
    const c = config;
    if (!isLlamaBlock(c)) {
      throw new ArgumentError('config', 'a Llama-style block (RMSNorm, SwiGLU, full RoPE, sequential residual) for cached decoding; GPT-2 and GPT-NeoX models decode by recomputation (generate())', describeArch(c));
    }
    if (!Decoder.supports(c)) throw new ArgumentError('config.attention', 'sparsek, window or dense for cached decoding', c.attention);
    const HS = headSize(c);
    const supportCap = opts.supportCap ?? 4 * c.k;
    this.prefillMax = opts.prefillMax === undefined ? c.context : checkInt('opts.prefillMax', opts.prefillMax, 1);
    this.heads = [];
    for (let l = 0; l < c.layers; l++) {
      const row: HeadCache[] = [];
      for (let h = 0; h < c.kvHeads; h++) {
        switch (c.attention) {
          case 'sparsek':
            row.push({
              ring: c.window > 0 ? new KvSlots(c.window, HS) : null,
              sel: c.k > 0 ? new KvSlots(c.k, HS) : null,
              selCount: 0,
              selector: new CausalSelector(c.k, Math.max(supportCap, c.k + 1)),
            });
            break;
          case 'window':
            row.push({ ring: new KvSlots(c.window, HS), sel: null, selCount: 0, selector: null });
            break;
          default: // dense
            row.push({ ring: new KvSlots(256, HS), sel: null, selCount: 0, selector: null });
        }
      }
      this.heads.push(row);
    }
    const f = (n: number) => new Float32Array(n);
    this.x = f(c.dim);
    this.ln = f(c.dim);
    this.q = f(c.heads * HS);
    this.qr = f(c.heads * HS);
    this.k = f(c.kvHeads * HS);
    this.kr = f(c.kvHeads * HS);
    this.v = f(c.kvHeads * HS);
    this.u = f(c.kvHeads);
    this.att = f(c.heads * HS);
    this.tmp = f(c.dim);
    this.gate = f(c.ffnDim);
    this.up = f(c.ffnDim);
    this.h = f(c.ffnDim);
    this.scores = new Float64Array(c.window + c.k + 1);
    this.acc = new Float64Array(HS);
    this.logits = f(c.vocabSize);
  }

  /** Whether this config has a cached form: a Llama-style block and sparsek, window or dense attention. */
  static supports(c: ModelConfig): boolean {
    return isLlamaBlock(c) && (c.attention === 'sparsek' || c.attention === 'window' || c.attention === 'dense');
  }

  /** Tokens consumed so far. */
  get length(): number {
    return this.pos;
  }

  stats(): CacheStats {
    let bytes = 0;
    let capHits = 0;
    for (const row of this.heads) {
      for (const hc of row) {
        bytes += (hc.ring?.bytes ?? 0) + (hc.sel?.bytes ?? 0) + (hc.selector?.bytes ?? 0);
        capHits += hc.selector?.capHits ?? 0;
      }
    }
    return { bytes, capHits, keysLastStep: this.keysLastStep };
  }

  /** Consumes token id at the next position; returns logits (V) for the token after it. */
  step(id: number): Float32Array {
    const c = this.config;
    const p = this.params;
    const C = c.dim;
    const HS = headSize(c);
    const NH = c.heads;
    const NKV = c.kvHeads;
    const F = c.ffnDim;
    const i = this.pos;
    this.keysLastStep = 0;
    this.x.set(p.wte.subarray(id * C, (id + 1) * C));
    for (let l = 0; l < c.layers; l++) {
      const w = p.layers[l];
      rmsnormForward(this.ln, this.rstd, this.x, w.ln1, 1, C, c.normEps);
      matmulForward(this.q, this.ln, w.wq, w.bq, 1, C, NH * HS);
      matmulForward(this.k, this.ln, w.wk, w.bk, 1, C, NKV * HS);
      matmulForward(this.v, this.ln, w.wv, w.bv, 1, C, NKV * HS);
      // With T = 1 the (T, NH*HS) and (NH, T, HS) layouts coincide.
      ropeForward(this.qr, this.q, 1, NH, 1, HS, c.ropeTheta, i);
      ropeForward(this.kr, this.k, 1, NKV, 1, HS, c.ropeTheta, i);
      if (w.wscore) {
        matmulForward(this.u, this.ln, w.wscore, null, 1, C, NKV);
        for (let h = 0; h < NKV; h++) this.u[h] = this.u[h] + c.scoreSlope * i;
      }
      for (let h = 0; h < NKV; h++) this.admit(this.heads[l][h], i, this.kr, h * HS, this.v, h * HS, this.u[h]);
      for (let hq = 0; hq < NH; hq++) this.attend(this.heads[l][Math.floor(hq / (NH / NKV))], hq, i);
      matmulForward(this.tmp, this.att, w.wo, w.bo, 1, NH * HS, C);
      for (let d = 0; d < C; d++) this.x[d] += this.tmp[d];
      rmsnormForward(this.ln, this.rstd, this.x, w.ln2, 1, C, c.normEps);
      matmulForward(this.gate, this.ln, w.wgate!, w.bgate, 1, C, F); // a Llama block has a gate (constructor)
      matmulForward(this.up, this.ln, w.wup, w.bup, 1, C, F);
      swigluForward(this.h, this.gate, this.up, F);
      matmulForward(this.tmp, this.h, w.wdown, w.bdown, 1, F, C);
      for (let d = 0; d < C; d++) this.x[d] += this.tmp[d];
    }
    rmsnormForward(this.ln, this.rstd, this.x, p.lnf, 1, C, c.normEps);
    matmulForward(this.logits, this.ln, p.lmHead ?? p.wte, null, 1, C, c.vocabSize);
    this.pos++;
    return this.logits;
  }

  /**
   * Consumes a prompt (at least one id in [0, V)); returns the logits (V) after its last token, the
   * same as stepping through it. The decoder is left as the steps would have left it. Batched
   * through one forward of Gpt over the first min(T, prefillMax) ids, up to the first support-cap
   * hit (see the file's head); the rest, and a prompt given after earlier steps, go step by step.
   * Costs a CPU copy of the parameters (and their gradients' buffer) while it runs.
   */
  prefill(ids: number[]): Float32Array {
    const c = this.config;
    const V = c.vocabSize;
    checkPrompt(ids, V);
    let n = 0; // ids consumed by the batch
    if (this.pos === 0) {
      const T = Math.min(ids.length, this.prefillMax);
      const model = Gpt.cpu(c);
      model.params.flat.set(this.params.flat);
      model.forward(ids.slice(0, T), 1, T);
      const HS = headSize(c);
      const inputs = model.attentionInputs(); // per layer: k, v (NKV, T, HS), u (NKV, T)
      let capped = false;
      while (n < T && !capped) {
        const i = n++;
        for (let l = 0; l < c.layers; l++) {
          const { k, v, u } = inputs[l];
          for (let h = 0; h < c.kvHeads; h++) {
            const hc = this.heads[l][h];
            const off = (h * T + i) * HS;
            this.admit(hc, i, k, off, v, off, u ? u[h * T + i] : 0);
            // Step i's tau was computed before the cap dropped a score: rows up to i stay exact.
            if (hc.selector && hc.selector.capHits > 0) capped = true;
          }
        }
      }
      this.pos = n;
      this.logits.set(model.logits.subarray((n - 1) * V, n * V));
      this.keysLastStep = this.keysAt(n - 1);
      model.dispose();
    }
    for (let t = n; t < ids.length; t++) this.step(ids[t]);
    return this.logits;
  }

  /** (query head, key) pairs that step i scores over the current cache, summed over layers. */
  private keysAt(i: number): number {
    const c = this.config;
    const nRing = c.attention === 'dense' ? i + 1 : Math.min(c.window, i + 1);
    let keys = 0;
    for (const row of this.heads) {
      for (let hq = 0; hq < c.heads; hq++) keys += nRing + row[Math.floor(hq / (c.heads / c.kvHeads))].selCount;
    }
    return keys;
  }

  /**
   * Brings position i's K/V (HS each, at k[kOff], v[vOff]) and score u into one KV head's cache, and
   * lets position i - W become a candidate.
   */
  private admit(hc: HeadCache, i: number, k: Float32Array, kOff: number, v: Float32Array, vOff: number, u: number): void {
    const c = this.config;
    const HS = headSize(c);
    const W = c.window;
    if (c.attention === 'dense') {
      if (i === hc.ring!.capacity) hc.ring!.grow();
      hc.ring!.write(i, i, k, kOff, v, vOff);
      return;
    }
    if (hc.selector) {
      const j = W > 0 ? i - W : i; // the new candidate
      if (j >= 0) {
        const uj = W > 0 ? hc.ring!.u[j % W] : u;
        hc.selector.push(uj, j);
        if (hc.selector.lastAccepted) {
          const sel = hc.sel!;
          let slot = hc.selCount;
          if (hc.selector.lastEvicted >= 0) {
            slot = 0;
            while (sel.pos[slot] !== hc.selector.lastEvicted) slot++;
          } else hc.selCount++;
          if (W > 0) sel.write(slot, j, hc.ring!.k, (j % W) * HS, hc.ring!.v, (j % W) * HS, uj);
          else sel.write(slot, j, k, kOff, v, vOff, uj);
        }
      }
    }
    if (W > 0) hc.ring!.write(i % W, i, k, kOff, v, vOff, hc.selector ? u : 0);
  }

  /** att[hq] = softmax-weighted, gated sum over the window and the selected set. */
  private attend(hc: HeadCache, hq: number, i: number): void {
    const c = this.config;
    const HS = headSize(c);
    const scale = 1 / Math.sqrt(HS);
    const qOff = hq * HS;
    const ring = hc.ring;
    const sel = hc.sel;
    const nRing = c.attention === 'dense' ? i + 1 : Math.min(c.window, i + 1);
    const nSel = hc.selCount;
    const tau = hc.selector ? hc.selector.tau : -Infinity;
    let max = -Infinity;
    const dot = (kk: Float32Array, slot: number) => {
      let acc = 0;
      for (let d = 0; d < HS; d++) acc += this.qr[qOff + d] * kk[slot * HS + d];
      return acc * scale;
    };
    if (this.scores.length < nRing + nSel) this.scores = new Float64Array(2 * (nRing + nSel)); // dense only
    const scores = this.scores;
    this.keysLastStep += nRing + nSel;
    for (let r = 0; r < nRing; r++) {
      scores[r] = dot(ring!.k, r);
      if (scores[r] > max) max = scores[r];
    }
    for (let r = 0; r < nSel; r++) {
      scores[nRing + r] = dot(sel!.k, r);
      if (scores[nRing + r] > max) max = scores[nRing + r];
    }
    let sum = 0;
    for (let r = 0; r < nRing + nSel; r++) {
      scores[r] = Math.exp(scores[r] - max);
      sum += scores[r];
    }
    const out = this.att;
    const acc = this.acc.fill(0);
    for (let r = 0; r < nRing; r++) {
      const a = scores[r] / sum;
      for (let d = 0; d < HS; d++) acc[d] += a * ring!.v[r * HS + d];
    }
    for (let r = 0; r < nSel; r++) {
      const gd = sel!.u[r] - tau;
      const g = gd <= 0 ? 0 : gd >= 1 ? 1 : gd;
      const a = (scores[nRing + r] / sum) * g;
      for (let d = 0; d < HS; d++) acc[d] += a * sel!.v[r * HS + d];
    }
    for (let d = 0; d < HS; d++) out[qOff + d] = acc[d];
  }
}

/** A prompt for prefill(): a non-empty array of token ids in [0, V). */
export function checkPrompt(ids: unknown, V: number): asserts ids is number[] {
  if (!Array.isArray(ids) || ids.length === 0) throw new ArgumentError('ids', 'a non-empty array of token ids', ids);
  for (let t = 0; t < ids.length; t++) {
    const id: unknown = ids[t];
    if (!Number.isInteger(id) || (id as number) < 0 || (id as number) >= V) throw new ArgumentError(`ids[${t}]`, `a token id in [0, ${V})`, id);
  }
}

function describeArch(c: ModelConfig): string {
  return `norm ${c.norm ?? 'rms'}, mlp ${c.mlp ?? 'swiglu'}, positions ${c.positions ?? 'rope'}` +
    `${c.rotaryDims !== undefined ? `, rotaryDims ${c.rotaryDims}` : ''}${c.parallelResidual ? ', parallel residual' : ''}`;
}
