// The decoder language model: a flat list of layer calls on a backend (src/backend.ts), forward
// then backward, over buffers allocated once for a (B, T) batch shape. Llama-style blocks:
//
//   x = wte[ids]
//   per layer:  a = rmsnorm(x) ; q, k, v = a Wq, a Wk, a Wv ; rope(q, k) ; u = a Wscore + eps t
//               x = x + attention(q, k, v, u) Wo
//               m = rmsnorm(x) ; x = x + (silu(m Wgate) * (m Wup)) Wdown
//   logits = rmsnorm(x) wte^T ; loss = cross-entropy(logits, targets)
//
// No autograd: backward() replays the list in reverse with explicit derivative calls. The model
// never touches device memory itself; F and I are the backend's float and int buffers.
// Not here: decoding with a cache (decode.ts), training loop (train/), checkpoints (io/).

import type { AttentionLayer, Backend, Selection } from '../backend.js';
import { cpuBackend } from '../cpu/backend.js';
import { AttentionShape } from '../core/check.js';
import { ModelConfig, headSize } from './config.js';
import { Params, allocParamsOn } from './params.js';

/** Activations of one layer, kept from forward for backward. */
interface LayerActs<F> {
  x: F; // (B*T, C) input to the layer (residual stream)
  ln1: F; // (B*T, C)
  rstd1: F; // (B*T)
  qFlat: F; // (B*T, NH*HS)
  kFlat: F; // (B*T, NKV*HS)
  vFlat: F; // (B*T, NKV*HS)
  q: F; // (B, NH, T, HS) after rope
  k: F; // (B, NKV, T, HS) after rope
  v: F; // (B, NKV, T, HS)
  uFlat: F | null; // (B*T, NKV)
  u: F | null; // (B, NKV, T) with the slope
  att: F; // (B, NH, T, HS)
  attFlat: F; // (B*T, NH*HS)
  x2: F; // (B*T, C) after the attention residual
  ln2: F; // (B*T, C)
  rstd2: F; // (B*T)
  gate: F; // (B*T, F)
  up: F; // (B*T, F)
  h: F; // (B*T, F)
  attention: AttentionLayer<F>;
}

/** Gradient scratch, reused by every layer in backward. */
interface Scratch<F> {
  dx: F; // (B*T, C)
  dln: F; // (B*T, C)
  dh: F; // (B*T, F)
  dgate: F; // (B*T, F)
  dup: F; // (B*T, F)
  dattFlat: F; // (B*T, NH*HS)
  datt: F; // (B, NH, T, HS)
  dq: F; // (B, NH, T, HS)
  dk: F; // (B, NKV, T, HS)
  dv: F; // (B, NKV, T, HS)
  dqPre: F; // (B, NH, T, HS) before rope
  dkPre: F; // (B, NKV, T, HS)
  dqFlat: F; // (B*T, NH*HS)
  dkFlat: F; // (B*T, NKV*HS)
  dvFlat: F; // (B*T, NKV*HS)
  du: F; // (B, NKV, T)
  duFlat: F; // (B*T, NKV)
  tmp: F; // (B, NH, T, HS) pre-rope heads
}

interface Batch<F, I> {
  B: number;
  T: number;
  acts: LayerActs<F>[];
  g: Scratch<F>;
  ids: I; // (B*T)
  targets: I; // (B*T)
  hostTargets: Int32Array; // (B*T)
  xf: F; // (B*T, C) final residual
  lnf: F; // (B*T, C)
  rstdf: F; // (B*T)
  logits: F; // (B*T, V)
  probs: F; // (B*T, V)
  losses: F; // (B*T)
  dlogits: F; // (B*T, V)
}

export class Gpt<F = Float32Array, I = Int32Array> {
  readonly params: Params<F>;
  readonly grads: Params<F>;
  private batch: Batch<F, I> | null = null;

  constructor(readonly config: ModelConfig, readonly be: Backend<F, I>) {
    this.params = allocParamsOn(config, be);
    this.grads = allocParamsOn(config, be);
  }

  /** A model on the CPU backend. */
  static cpu(config: ModelConfig): Gpt<Float32Array, Int32Array> {
    return new Gpt(config, cpuBackend);
  }

  /** Logits (B*T, V) of the last forward. */
  get logits(): F {
    if (!this.batch) throw new Error('Gpt.logits read before any forward');
    return this.batch.logits;
  }

  /** (Re)allocates activations for a batch shape; a no-op when the shape is unchanged. */
  private ensure(B: number, T: number): Batch<F, I> {
    if (this.batch && this.batch.B === B && this.batch.T === T) return this.batch;
    if (this.batch) this.release(this.batch);
    const c = this.config;
    const be = this.be;
    const N = B * T;
    const C = c.dim;
    const HS = headSize(c);
    const NH = c.heads;
    const NKV = c.kvHeads;
    const Fw = c.ffnDim;
    const f = (n: number) => be.alloc(n);
    const shape: AttentionShape = { B, T, NH, NKV, HS };
    const scored = c.attention === 'sparsek';
    const acts: LayerActs<F>[] = [];
    for (let l = 0; l < c.layers; l++) {
      acts.push({
        x: f(N * C), ln1: f(N * C), rstd1: f(N),
        qFlat: f(N * NH * HS), kFlat: f(N * NKV * HS), vFlat: f(N * NKV * HS),
        q: f(N * NH * HS), k: f(N * NKV * HS), v: f(N * NKV * HS),
        uFlat: scored ? f(N * NKV) : null, u: scored ? f(N * NKV) : null,
        att: f(N * NH * HS), attFlat: f(N * NH * HS),
        x2: f(N * C), ln2: f(N * C), rstd2: f(N), gate: f(N * Fw), up: f(N * Fw), h: f(N * Fw),
        attention: be.attention(c, shape),
      });
    }
    const g: Scratch<F> = {
      dx: f(N * C), dln: f(N * C), dh: f(N * Fw), dgate: f(N * Fw), dup: f(N * Fw),
      dattFlat: f(N * NH * HS), datt: f(N * NH * HS), dq: f(N * NH * HS), dk: f(N * NKV * HS), dv: f(N * NKV * HS),
      dqPre: f(N * NH * HS), dkPre: f(N * NKV * HS),
      dqFlat: f(N * NH * HS), dkFlat: f(N * NKV * HS), dvFlat: f(N * NKV * HS), du: f(N * NKV), duFlat: f(N * NKV),
      tmp: f(N * NH * HS),
    };
    this.batch = {
      B, T, acts, g,
      ids: be.allocInt(N), targets: be.allocInt(N), hostTargets: new Int32Array(N),
      xf: f(N * C), lnf: f(N * C), rstdf: f(N),
      logits: f(N * c.vocabSize), probs: f(N * c.vocabSize), losses: f(N), dlogits: f(N * c.vocabSize),
    };
    return this.batch;
  }

  private release(b: Batch<F, I>): void {
    const free = (x: F | I | null) => x !== null && this.be.free(x);
    for (const a of b.acts) {
      for (const x of [a.x, a.ln1, a.rstd1, a.qFlat, a.kFlat, a.vFlat, a.q, a.k, a.v, a.uFlat, a.u, a.att, a.attFlat, a.x2, a.ln2, a.rstd2, a.gate, a.up, a.h]) free(x);
    }
    for (const x of Object.values(b.g)) free(x);
    for (const x of [b.ids, b.targets, b.xf, b.lnf, b.rstdf, b.logits, b.probs, b.losses, b.dlogits]) free(x);
  }

  /** Frees every buffer this model allocated (device memory is not garbage-collected). */
  dispose(): void {
    if (this.batch) this.release(this.batch);
    this.batch = null;
    this.be.free(this.params.flat);
    this.be.free(this.grads.flat);
  }

  /**
   * Forward over ids (B, T); with targets (B, T), returns the mean cross-entropy over targets
   * that are not -1, else NaN. Logits stay in `this.logits` (B*T, V).
   */
  forward(ids: ArrayLike<number>, B: number, T: number, targets?: ArrayLike<number>): number {
    const bt = this.ensure(B, T);
    const be = this.be;
    const c = this.config;
    const p = this.params;
    const N = B * T;
    const C = c.dim;
    const HS = headSize(c);
    const NH = c.heads;
    const NKV = c.kvHeads;
    const Fw = c.ffnDim;
    const V = c.vocabSize;
    be.uploadInt(bt.ids, Int32Array.from(ids));
    be.embeddingForward(bt.acts[0].x, bt.ids, p.wte, N, C);
    for (let l = 0; l < c.layers; l++) {
      const a = bt.acts[l];
      const w = p.layers[l];
      be.rmsnormForward(a.ln1, a.rstd1, a.x, w.ln1, N, C, c.normEps);
      be.matmulForward(a.qFlat, a.ln1, w.wq, null, N, C, NH * HS);
      be.matmulForward(a.kFlat, a.ln1, w.wk, null, N, C, NKV * HS);
      be.matmulForward(a.vFlat, a.ln1, w.wv, null, N, C, NKV * HS);
      be.toHeads(bt.g.tmp, a.qFlat, B, T, NH, HS);
      be.ropeForward(a.q, bt.g.tmp, B, NH, T, HS, c.ropeTheta, 0);
      be.toHeads(bt.g.tmp, a.kFlat, B, T, NKV, HS);
      be.ropeForward(a.k, bt.g.tmp, B, NKV, T, HS, c.ropeTheta, 0);
      be.toHeads(a.v, a.vFlat, B, T, NKV, HS);
      if (w.wscore && a.uFlat && a.u) {
        be.matmulForward(a.uFlat, a.ln1, w.wscore, null, N, C, NKV);
        be.scoresToHeads(a.u, a.uFlat, B, T, NKV, c.scoreSlope);
      }
      a.attention.forward(a.att, a.q, a.k, a.v, a.u);
      be.fromHeads(a.attFlat, a.att, B, T, NH, HS);
      be.matmulForward(a.x2, a.attFlat, w.wo, null, N, NH * HS, C);
      be.addInPlace(a.x2, a.x, N * C);
      be.rmsnormForward(a.ln2, a.rstd2, a.x2, w.ln2, N, C, c.normEps);
      be.matmulForward(a.gate, a.ln2, w.wgate, null, N, C, Fw);
      be.matmulForward(a.up, a.ln2, w.wup, null, N, C, Fw);
      be.swigluForward(a.h, a.gate, a.up, N * Fw);
      const next = l + 1 < c.layers ? bt.acts[l + 1].x : bt.xf;
      be.matmulForward(next, a.h, w.wdown, null, N, Fw, C);
      be.addInPlace(next, a.x2, N * C);
    }
    be.rmsnormForward(bt.lnf, bt.rstdf, bt.xf, p.lnf, N, C, c.normEps);
    be.matmulForward(bt.logits, bt.lnf, p.wte, null, N, C, V);
    if (!targets) return NaN;
    bt.hostTargets.set(targets);
    be.uploadInt(bt.targets, bt.hostTargets);
    be.crossEntropyForward(bt.losses, bt.probs, bt.logits, bt.targets, N, V);
    const losses = be.download(bt.losses);
    let sum = 0;
    let count = 0;
    for (let i = 0; i < N; i++) {
      if (bt.hostTargets[i] >= 0) {
        sum += losses[i];
        count++;
      }
    }
    return count > 0 ? sum / count : NaN;
  }

  /** Per layer, the selected positions of SparseK from the last forward (null for other kinds). */
  selections(): (Selection[] | null)[] {
    return (this.batch?.acts ?? []).map((a) => a.attention.selections());
  }

  zeroGrad(): void {
    this.be.zero(this.grads.flat);
  }

  /** Accumulates d(mean loss)/d(params) into grads; call after forward() with targets. */
  backward(): void {
    const bt = this.batch;
    if (!bt) throw new Error('Gpt.backward called before forward');
    const { B, T, g } = bt;
    const be = this.be;
    const c = this.config;
    const p = this.params;
    const gp = this.grads;
    const N = B * T;
    const C = c.dim;
    const HS = headSize(c);
    const NH = c.heads;
    const NKV = c.kvHeads;
    const Fw = c.ffnDim;
    const V = c.vocabSize;
    let count = 0;
    for (let i = 0; i < N; i++) if (bt.hostTargets[i] >= 0) count++;
    be.zero(bt.dlogits);
    be.crossEntropyBackward(bt.dlogits, count > 0 ? 1 / count : 0, bt.probs, bt.targets, N, V);
    // logits = lnf wte^T
    be.zero(g.dln);
    be.matmulBackward(g.dln, gp.wte, null, bt.dlogits, bt.lnf, p.wte, N, C, V);
    // lnf = rmsnorm(xf): dx is the gradient flowing down the residual stream.
    be.zero(g.dx);
    be.rmsnormBackward(g.dx, gp.lnf, g.dln, bt.xf, p.lnf, bt.rstdf, N, C);
    for (let l = c.layers - 1; l >= 0; l--) {
      const a = bt.acts[l];
      const w = p.layers[l];
      const gw = gp.layers[l];
      // x_next = x2 + h Wdown: dx2 = dx (kept in g.dx), dh = dx Wdown
      be.zero(g.dh);
      be.matmulBackward(g.dh, gw.wdown, null, g.dx, a.h, w.wdown, N, Fw, C);
      be.zero(g.dgate);
      be.zero(g.dup);
      be.swigluBackward(g.dgate, g.dup, g.dh, a.gate, a.up, N * Fw);
      be.zero(g.dln);
      be.matmulBackward(g.dln, gw.wgate, null, g.dgate, a.ln2, w.wgate, N, C, Fw);
      be.matmulBackward(g.dln, gw.wup, null, g.dup, a.ln2, w.wup, N, C, Fw);
      be.rmsnormBackward(g.dx, gw.ln2, g.dln, a.x2, w.ln2, a.rstd2, N, C); // dx += d(ln2)/dx2
      // x2 = x + attFlat Wo: dx stays, dattFlat = dx Wo
      be.zero(g.dattFlat);
      be.matmulBackward(g.dattFlat, gw.wo, null, g.dx, a.attFlat, w.wo, N, NH * HS, C);
      be.toHeads(g.datt, g.dattFlat, B, T, NH, HS);
      a.attention.backward(g.dq, g.dk, g.dv, a.u ? g.du : null, g.datt);
      be.zero(g.dqPre);
      be.zero(g.dkPre);
      be.ropeBackward(g.dqPre, g.dq, B, NH, T, HS, c.ropeTheta, 0);
      be.ropeBackward(g.dkPre, g.dk, B, NKV, T, HS, c.ropeTheta, 0);
      be.fromHeads(g.dqFlat, g.dqPre, B, T, NH, HS);
      be.fromHeads(g.dkFlat, g.dkPre, B, T, NKV, HS);
      be.fromHeads(g.dvFlat, g.dv, B, T, NKV, HS);
      be.zero(g.dln);
      be.matmulBackward(g.dln, gw.wq, null, g.dqFlat, a.ln1, w.wq, N, C, NH * HS);
      be.matmulBackward(g.dln, gw.wk, null, g.dkFlat, a.ln1, w.wk, N, C, NKV * HS);
      be.matmulBackward(g.dln, gw.wv, null, g.dvFlat, a.ln1, w.wv, N, C, NKV * HS);
      if (w.wscore && gw.wscore && a.u) {
        be.scoresFromHeads(g.duFlat, g.du, B, T, NKV);
        be.matmulBackward(g.dln, gw.wscore, null, g.duFlat, a.ln1, w.wscore, N, C, NKV);
      }
      be.rmsnormBackward(g.dx, gw.ln1, g.dln, a.x, w.ln1, a.rstd1, N, C);
    }
    be.embeddingBackward(gp.wte, g.dx, bt.ids, N, C);
  }
}
