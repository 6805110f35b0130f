// The decoder language model on the CPU: a flat list of layer calls, forward then backward, over
// buffers allocated once for a (B, T) batch shape. Llama-style blocks:
//
//   x = wte[ids]
//   per layer:  a = rmsnorm(x) ; q, k, v = a Wq, a Wk, a Wv ; rope(q, k) ; u = a Wscore + eps t
//               x = x + attention(q, k, v, u) Wo
//               m = rmsnorm(x) ; x = x + (silu(m Wgate) * (m Wup)) Wdown
//   logits = rmsnorm(x) wte^T ; loss = cross-entropy(logits, targets)
//
// No autograd: backward() replays the list in reverse with explicit derivative calls.
// Not here: decoding with a cache (decode.ts), training loop (train/), checkpoints (io/).

import { matmulForward, matmulBackward } from '../cpu/kernels/matmul.js';
import { rmsnormForward, rmsnormBackward } from '../cpu/kernels/norm.js';
import { ropeForward, ropeBackward } from '../cpu/kernels/rope.js';
import { swigluForward, swigluBackward } from '../cpu/kernels/activation.js';
import { embeddingForward, embeddingBackward } from '../cpu/kernels/embedding.js';
import { crossEntropyForward, crossEntropyBackward } from '../cpu/kernels/loss.js';
import { toHeads, fromHeads } from '../cpu/kernels/layout.js';
import { allocF32 } from '../cpu/threads.js';
import { AttentionShape } from '../core/check.js';
import type { SparsekPlan } from '../cpu/kernels/attention.js';
import { ModelConfig, headSize } from './config.js';
import { Params, allocParams } from './params.js';
import { AttentionLayer, makeAttention } from './attention.js';

/** Activations of one layer, kept from forward for backward. */
interface LayerActs {
  x: Float32Array; // (B*T, C) input to the layer (residual stream)
  ln1: Float32Array; // (B*T, C)
  rstd1: Float32Array; // (B*T)
  qkvFlat: { q: Float32Array; k: Float32Array; v: Float32Array }; // (B*T, NH*HS), (B*T, NKV*HS) x2
  q: Float32Array; // (B, NH, T, HS) after rope
  k: Float32Array; // (B, NKV, T, HS) after rope
  v: Float32Array; // (B, NKV, T, HS)
  uFlat: Float32Array | null; // (B*T, NKV)
  u: Float32Array | null; // (B, NKV, T) with the slope
  att: Float32Array; // (B, NH, T, HS)
  attFlat: Float32Array; // (B*T, NH*HS)
  x2: Float32Array; // (B*T, C) after the attention residual
  ln2: Float32Array; // (B*T, C)
  rstd2: Float32Array; // (B*T)
  gate: Float32Array; // (B*T, F)
  up: Float32Array; // (B*T, F)
  h: Float32Array; // (B*T, F)
  attention: AttentionLayer;
}

/** Gradient scratch for one layer, reused by every layer in backward. */
interface LayerGrads {
  dx: Float32Array; // (B*T, C)
  dln: Float32Array; // (B*T, C)
  dh: Float32Array; // (B*T, F)
  dgate: Float32Array; // (B*T, F)
  dup: Float32Array; // (B*T, F)
  dattFlat: Float32Array; // (B*T, NH*HS)
  datt: Float32Array; // (B, NH, T, HS)
  dq: Float32Array; // (B, NH, T, HS)
  dk: Float32Array; // (B, NKV, T, HS)
  dv: Float32Array; // (B, NKV, T, HS)
  dqPre: Float32Array; // (B, NH, T, HS) before rope
  dkPre: Float32Array; // (B, NKV, T, HS)
  dqFlat: Float32Array; // (B*T, NH*HS)
  dkFlat: Float32Array; // (B*T, NKV*HS)
  dvFlat: Float32Array; // (B*T, NKV*HS)
  du: Float32Array; // (B, NKV, T)
  duFlat: Float32Array; // (B*T, NKV)
}

export class Gpt {
  readonly params: Params;
  readonly grads: Params;
  private batch = { B: 0, T: 0 };
  private acts: LayerActs[] = [];
  private g: LayerGrads | null = null;
  private ids = new Int32Array(0);
  private targets = new Int32Array(0);
  private xf = allocF32(0); // (B*T, C) final residual
  private lnf = allocF32(0); // (B*T, C)
  private rstdf = allocF32(0); // (B*T)
  logits = allocF32(0); // (B*T, V)
  private probs = allocF32(0); // (B*T, V)
  private losses = allocF32(0); // (B*T)
  private dlogits = allocF32(0); // (B*T, V)

  constructor(readonly config: ModelConfig) {
    this.params = allocParams(config);
    this.grads = allocParams(config);
  }

  /** (Re)allocates activations for a batch shape; a no-op when the shape is unchanged. */
  private ensure(B: number, T: number): void {
    if (this.batch.B === B && this.batch.T === T) return;
    const c = this.config;
    const N = B * T;
    const C = c.dim;
    const HS = headSize(c);
    const NH = c.heads;
    const NKV = c.kvHeads;
    const F = c.ffnDim;
    const f = allocF32; // SharedArrayBuffer-backed when the kernels run on several threads
    const shape: AttentionShape = { B, T, NH, NKV, HS };
    const scored = c.attention === 'sparsek';
    this.acts = [];
    for (let l = 0; l < c.layers; l++) {
      this.acts.push({
        x: f(N * C), ln1: f(N * C), rstd1: f(N),
        qkvFlat: { q: f(N * NH * HS), k: f(N * NKV * HS), v: f(N * NKV * HS) },
        q: f(N * NH * HS), k: f(N * NKV * HS), v: f(N * NKV * HS),
        uFlat: scored ? f(N * NKV) : null, u: scored ? f(N * NKV) : null,
        att: f(N * NH * HS), attFlat: f(N * NH * HS),
        x2: f(N * C), ln2: f(N * C), rstd2: f(N), gate: f(N * F), up: f(N * F), h: f(N * F),
        attention: makeAttention(c, shape),
      });
    }
    this.g = {
      dx: f(N * C), dln: f(N * C), dh: f(N * F), dgate: f(N * F), dup: f(N * F),
      dattFlat: f(N * NH * HS), datt: f(N * NH * HS), dq: f(N * NH * HS), dk: f(N * NKV * HS), dv: f(N * NKV * HS),
      dqPre: f(N * NH * HS), dkPre: f(N * NKV * HS),
      dqFlat: f(N * NH * HS), dkFlat: f(N * NKV * HS), dvFlat: f(N * NKV * HS), du: f(N * NKV), duFlat: f(N * NKV),
    };
    this.ids = new Int32Array(N);
    this.targets = new Int32Array(N);
    this.xf = f(N * C);
    this.lnf = f(N * C);
    this.rstdf = f(N);
    this.logits = f(N * c.vocabSize);
    this.probs = f(N * c.vocabSize);
    this.losses = f(N);
    this.dlogits = f(N * c.vocabSize);
    this.batch = { B, T };
  }

  /**
   * Forward over ids (B, T); with targets (B, T), returns the mean cross-entropy over targets
   * that are not -1, else NaN. Logits stay in `this.logits` (B*T, V).
   */
  forward(ids: ArrayLike<number>, B: number, T: number, targets?: ArrayLike<number>): number {
    this.ensure(B, T);
    const c = this.config;
    const p = this.params;
    const N = B * T;
    const C = c.dim;
    const HS = headSize(c);
    const NH = c.heads;
    const NKV = c.kvHeads;
    const F = c.ffnDim;
    const V = c.vocabSize;
    this.ids.set(ids);
    embeddingForward(this.acts[0].x, this.ids, p.wte, N, C);
    for (let l = 0; l < c.layers; l++) {
      const a = this.acts[l];
      const w = p.layers[l];
      rmsnormForward(a.ln1, a.rstd1, a.x, w.ln1, N, C, c.normEps);
      matmulForward(a.qkvFlat.q, a.ln1, w.wq, null, N, C, NH * HS);
      matmulForward(a.qkvFlat.k, a.ln1, w.wk, null, N, C, NKV * HS);
      matmulForward(a.qkvFlat.v, a.ln1, w.wv, null, N, C, NKV * HS);
      toHeads(a.att, a.qkvFlat.q, B, T, NH, HS); // a.att as scratch for pre-rope q
      ropeForward(a.q, a.att, B, NH, T, HS, c.ropeTheta, 0);
      toHeads(a.att, a.qkvFlat.k, B, T, NKV, HS);
      ropeForward(a.k, a.att, B, NKV, T, HS, c.ropeTheta, 0);
      toHeads(a.v, a.qkvFlat.v, B, T, NKV, HS);
      if (w.wscore && a.uFlat && a.u) {
        matmulForward(a.uFlat, a.ln1, w.wscore, null, N, C, NKV);
        scoresToHeads(a.u, a.uFlat, B, T, NKV, c.scoreSlope);
      }
      a.attention.forward(a.att, a.q, a.k, a.v, a.u);
      fromHeads(a.attFlat, a.att, B, T, NH, HS);
      matmulForward(a.x2, a.attFlat, w.wo, null, N, NH * HS, C);
      for (let i = 0; i < N * C; i++) a.x2[i] += a.x[i];
      rmsnormForward(a.ln2, a.rstd2, a.x2, w.ln2, N, C, c.normEps);
      matmulForward(a.gate, a.ln2, w.wgate, null, N, C, F);
      matmulForward(a.up, a.ln2, w.wup, null, N, C, F);
      swigluForward(a.h, a.gate, a.up, N * F);
      const next = l + 1 < c.layers ? this.acts[l + 1].x : this.xf;
      matmulForward(next, a.h, w.wdown, null, N, F, C);
      for (let i = 0; i < N * C; i++) next[i] += a.x2[i];
    }
    rmsnormForward(this.lnf, this.rstdf, this.xf, p.lnf, N, C, c.normEps);
    matmulForward(this.logits, this.lnf, p.wte, null, N, C, V);
    if (!targets) return NaN;
    this.targets.set(targets);
    crossEntropyForward(this.losses, this.probs, this.logits, this.targets, N, V);
    let sum = 0;
    let count = 0;
    for (let i = 0; i < N; i++) {
      if (this.targets[i] >= 0) {
        sum += this.losses[i];
        count++;
      }
    }
    return count > 0 ? sum / count : NaN;
  }

  /** Per layer, SparseK's selection plan from the last forward (null for other attention kinds). */
  selectionPlans(): (SparsekPlan | null)[] {
    return this.acts.map((a) => a.attention.lastPlan());
  }

  zeroGrad(): void {
    this.grads.flat.fill(0);
  }

  /** Accumulates d(mean loss)/d(params) into grads; call after forward() with targets. */
  backward(): void {
    const { B, T } = this.batch;
    const c = this.config;
    const p = this.params;
    const gp = this.grads;
    const g = this.g!;
    const N = B * T;
    const C = c.dim;
    const HS = headSize(c);
    const NH = c.heads;
    const NKV = c.kvHeads;
    const F = c.ffnDim;
    const V = c.vocabSize;
    let count = 0;
    for (let i = 0; i < N; i++) if (this.targets[i] >= 0) count++;
    this.dlogits.fill(0);
    crossEntropyBackward(this.dlogits, count > 0 ? 1 / count : 0, this.probs, this.targets, N, V);
    // logits = lnf wte^T
    g.dln.fill(0);
    matmulBackward(g.dln, gp.wte, null, this.dlogits, this.lnf, p.wte, N, C, V);
    // lnf = rmsnorm(xf): dx is the gradient flowing down the residual stream.
    g.dx.fill(0);
    rmsnormBackward(g.dx, gp.lnf, g.dln, this.xf, p.lnf, this.rstdf, N, C);
    for (let l = c.layers - 1; l >= 0; l--) {
      const a = this.acts[l];
      const w = p.layers[l];
      const gw = gp.layers[l];
      // x_next = x2 + h Wdown: dx2 = dx (kept in g.dx), dh = dx Wdown
      g.dh.fill(0);
      matmulBackward(g.dh, gw.wdown, null, g.dx, a.h, w.wdown, N, F, C);
      g.dgate.fill(0);
      g.dup.fill(0);
      swigluBackward(g.dgate, g.dup, g.dh, a.gate, a.up, N * F);
      g.dln.fill(0);
      matmulBackward(g.dln, gw.wgate, null, g.dgate, a.ln2, w.wgate, N, C, F);
      matmulBackward(g.dln, gw.wup, null, g.dup, a.ln2, w.wup, N, C, F);
      rmsnormBackward(g.dx, gw.ln2, g.dln, a.x2, w.ln2, a.rstd2, N, C); // dx += d(ln2)/dx2
      // x2 = x + attFlat Wo: dx stays, dattFlat = dx Wo
      g.dattFlat.fill(0);
      matmulBackward(g.dattFlat, gw.wo, null, g.dx, a.attFlat, w.wo, N, NH * HS, C);
      toHeads(g.datt, g.dattFlat, B, T, NH, HS);
      a.attention.backward(g.dq, g.dk, g.dv, a.u ? g.du : null, g.datt);
      g.dqPre.fill(0);
      g.dkPre.fill(0);
      ropeBackward(g.dqPre, g.dq, B, NH, T, HS, c.ropeTheta, 0);
      ropeBackward(g.dkPre, g.dk, B, NKV, T, HS, c.ropeTheta, 0);
      fromHeads(g.dqFlat, g.dqPre, B, T, NH, HS);
      fromHeads(g.dkFlat, g.dkPre, B, T, NKV, HS);
      fromHeads(g.dvFlat, g.dv, B, T, NKV, HS);
      g.dln.fill(0);
      matmulBackward(g.dln, gw.wq, null, g.dqFlat, a.ln1, w.wq, N, C, NH * HS);
      matmulBackward(g.dln, gw.wk, null, g.dkFlat, a.ln1, w.wk, N, C, NKV * HS);
      matmulBackward(g.dln, gw.wv, null, g.dvFlat, a.ln1, w.wv, N, C, NKV * HS);
      if (w.wscore && gw.wscore && a.u) {
        scoresFromHeads(g.duFlat, g.du, B, T, NKV);
        matmulBackward(g.dln, gw.wscore, null, g.duFlat, a.ln1, w.wscore, N, C, NKV);
      }
      rmsnormBackward(g.dx, gw.ln1, g.dln, a.x, w.ln1, a.rstd1, N, C);
    }
    embeddingBackward(gp.wte, g.dx, this.ids, N, C);
  }
}

/** u (B, NKV, T) = uFlat (B*T, NKV) transposed, plus the position slope eps * t (SPEC section 2). */
export function scoresToHeads(u: Float32Array, uFlat: Float32Array, B: number, T: number, NKV: number, eps: number): void {
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++)
      for (let h = 0; h < NKV; h++) u[(b * NKV + h) * T + t] = uFlat[(b * T + t) * NKV + h] + eps * t;
}

/** The transpose back; the slope is a constant and has no gradient. */
function scoresFromHeads(duFlat: Float32Array, du: Float32Array, B: number, T: number, NKV: number): void {
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++)
      for (let h = 0; h < NKV; h++) duFlat[(b * T + t) * NKV + h] = du[(b * NKV + h) * T + t];
}
