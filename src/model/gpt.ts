// The decoder language model: a flat list of layer calls on a backend (src/backend.ts), forward
// then backward, over buffers allocated once for a (B, T) batch shape. Llama-style blocks:
//
//   x = wte[ids]
//   per layer:  a = rmsnorm(x) ; q, k, v = a Wq, a Wk, a Wv ; rope(q, k) ; u = a Wscore + eps t
//               x = x + attention(q, k, v, u) Wo
//               m = rmsnorm(x) ; x = x + (silu(m Wgate) * (m Wup)) Wdown
//   logits = rmsnorm(x) wte^T ; loss = cross-entropy(logits, targets)
//
// The architecture fields of config.ts swap parts of this list for imported checkpoints: LayerNorm
// with a bias for rmsnorm; a GELU MLP, act(m Wup + b) Wdown + b; learned positions added to x
// (x = wte[ids] + wpe[t]) instead of rope; RoPE on the first rotaryDims features of each head;
// biases on the projections; an untied lm_head; NeoX's parallel residual,
//               x = x + attention(norm1(x)) Wo + mlp(norm2(x)).
// With every field at its default the calls are exactly the Llama list above.
// No autograd: backward() replays the list in reverse with explicit derivative calls. The model
// never touches device memory itself; F and I are the backend's float and int buffers.
// Not here: decoding with a cache (decode.ts), training loop (train/), checkpoints (io/).

import type { AttentionLayer, Backend, GeluForm, Selection } from '../backend.js';
import { cpuBackend } from '../cpu/backend.js';
import { AttentionShape } from '../core/check.js';
import { ArgumentError } from '../core/errors.js';
import { Architecture, ModelConfig, arch, headSize } from './config.js';
import { Params, allocParamsOn } from './params.js';

/** Activations of one layer, kept from forward for backward. */
interface LayerActs<F> {
  x: F; // (B*T, C) input to the layer (residual stream)
  ln1: F; // (B*T, C)
  mean1: F | null; // (B*T), LayerNorm only
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
  mean2: F | null; // (B*T), LayerNorm only
  rstd2: F; // (B*T)
  gate: F | null; // (B*T, F), SwiGLU only
  up: F; // (B*T, F)
  h: F; // (B*T, F)
  attention: AttentionLayer<F>;
}

/** Gradient scratch, reused by every layer in backward. */
interface Scratch<F> {
  dx: F; // (B*T, C)
  dln: F; // (B*T, C)
  dh: F; // (B*T, F)
  dgate: F | null; // (B*T, F), SwiGLU only
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
  posIds: I | null; // (B*T) position t of each row, learned positions only
  pos: F | null; // (B*T, C) wpe rows, learned positions only
  targets: I; // (B*T)
  hostTargets: Int32Array; // (B*T)
  xf: F; // (B*T, C) final residual
  lnf: F; // (B*T, C)
  meanf: F | null; // (B*T), LayerNorm only
  rstdf: F; // (B*T)
  logits: F; // (B*T, V)
  probs: F; // (B*T, V)
  losses: F; // (B*T)
  dlogits: F; // (B*T, V)
}

export class Gpt<F = Float32Array, I = Int32Array> {
  readonly params: Params<F>;
  readonly grads: Params<F>;
  readonly arch: Architecture;
  private batch: Batch<F, I> | null = null;

  constructor(readonly config: ModelConfig, readonly be: Backend<F, I>) {
    this.arch = arch(config);
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
    // Storage: float32 for the residual stream, statistics, scores and gradients; 'act' (bf16 under
    // mixed precision) for what enters and leaves the matrix products; q, k, v, the attention output
    // and its gradient as the attention layer reads and writes them (io: bf16 for the tensor-core kernels).
    const f = (n: number) => be.alloc(n);
    const act = (n: number) => be.alloc(n, 'act');
    const shape: AttentionShape = { B, T, NH, NKV, HS };
    const layers = Array.from({ length: c.layers }, () => be.attention(c, shape));
    const io = (n: number) => be.alloc(n, layers[0].io);
    const scored = c.attention === 'sparsek';
    const layerNorm = this.arch.norm === 'layer';
    const swiglu = this.arch.mlp === 'swiglu';
    const learned = this.arch.positions === 'learned';
    const acts: LayerActs<F>[] = [];
    for (let l = 0; l < c.layers; l++) {
      acts.push({
        x: f(N * C), ln1: act(N * C), mean1: layerNorm ? f(N) : null, rstd1: f(N),
        qFlat: act(N * NH * HS), kFlat: act(N * NKV * HS), vFlat: act(N * NKV * HS),
        q: io(N * NH * HS), k: io(N * NKV * HS), v: io(N * NKV * HS),
        uFlat: scored ? f(N * NKV) : null, u: scored ? f(N * NKV) : null,
        att: io(N * NH * HS), attFlat: act(N * NH * HS),
        x2: f(N * C), ln2: act(N * C), mean2: layerNorm ? f(N) : null, rstd2: f(N),
        gate: swiglu ? act(N * Fw) : null, up: act(N * Fw), h: act(N * Fw),
        attention: layers[l],
      });
    }
    let posIds: I | null = null;
    if (learned) {
      posIds = be.allocInt(N);
      const host = new Int32Array(N);
      for (let i = 0; i < N; i++) host[i] = i % T;
      be.uploadInt(posIds, host);
    }
    const g: Scratch<F> = {
      dx: f(N * C), dln: act(N * C), dh: act(N * Fw), dgate: swiglu ? act(N * Fw) : null, dup: act(N * Fw),
      dattFlat: act(N * NH * HS), datt: io(N * NH * HS), dq: f(N * NH * HS), dk: f(N * NKV * HS), dv: f(N * NKV * HS),
      dqPre: f(N * NH * HS), dkPre: f(N * NKV * HS),
      dqFlat: act(N * NH * HS), dkFlat: act(N * NKV * HS), dvFlat: act(N * NKV * HS), du: f(N * NKV), duFlat: f(N * NKV),
      tmp: f(N * NH * HS),
    };
    this.batch = {
      B, T, acts, g,
      ids: be.allocInt(N), posIds, pos: learned ? f(N * C) : null, targets: be.allocInt(N), hostTargets: new Int32Array(N),
      xf: f(N * C), lnf: act(N * C), meanf: layerNorm ? f(N) : null, rstdf: f(N),
      logits: act(N * c.vocabSize), probs: act(N * c.vocabSize), losses: f(N), dlogits: act(N * c.vocabSize),
    };
    return this.batch;
  }

  private release(b: Batch<F, I>): void {
    const free = (x: F | I | null) => x !== null && this.be.free(x);
    for (const a of b.acts) {
      for (const x of [a.x, a.ln1, a.mean1, a.rstd1, a.qFlat, a.kFlat, a.vFlat, a.q, a.k, a.v, a.uFlat, a.u, a.att, a.attFlat, a.x2, a.ln2, a.mean2, a.rstd2, a.gate, a.up, a.h]) free(x);
      a.attention.dispose();
    }
    for (const x of Object.values(b.g)) free(x);
    for (const x of [b.ids, b.posIds, b.pos, b.targets, b.xf, b.lnf, b.meanf, b.rstdf, b.logits, b.probs, b.losses, b.dlogits]) free(x);
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
    const c = this.config;
    const ar = this.arch;
    if (ar.positions === 'learned' && T > c.context) {
      throw new ArgumentError('T', `at most context (${c.context}): learned position embeddings end there`, T);
    }
    const bt = this.ensure(B, T);
    const be = this.be;
    const p = this.params;
    const N = B * T;
    const C = c.dim;
    const HS = headSize(c);
    const NH = c.heads;
    const NKV = c.kvHeads;
    const Fw = c.ffnDim;
    const V = c.vocabSize;
    const gelu: GeluForm = ar.mlp === 'gelu' ? 'erf' : 'tanh';
    be.uploadInt(bt.ids, Int32Array.from(ids));
    be.embeddingForward(bt.acts[0].x, bt.ids, p.wte, N, C);
    if (p.wpe && bt.posIds && bt.pos) {
      be.embeddingForward(bt.pos, bt.posIds, p.wpe, N, C);
      be.addInPlace(bt.acts[0].x, bt.pos, N * C);
    }
    for (let l = 0; l < c.layers; l++) {
      const a = bt.acts[l];
      const w = p.layers[l];
      this.normForward(a.ln1, a.mean1, a.rstd1, a.x, w.ln1, w.ln1b, N);
      be.matmulForward(a.qFlat, a.ln1, w.wq, w.bq, N, C, NH * HS);
      be.matmulForward(a.kFlat, a.ln1, w.wk, w.bk, N, C, NKV * HS);
      be.matmulForward(a.vFlat, a.ln1, w.wv, w.bv, N, C, NKV * HS);
      if (ar.positions === 'learned') {
        be.toHeads(a.q, a.qFlat, B, T, NH, HS);
        be.toHeads(a.k, a.kFlat, B, T, NKV, HS);
      } else if (ar.rotaryDims === HS) {
        be.toHeads(bt.g.tmp, a.qFlat, B, T, NH, HS);
        be.ropeForward(a.q, bt.g.tmp, B, NH, T, HS, c.ropeTheta, 0);
        be.toHeads(bt.g.tmp, a.kFlat, B, T, NKV, HS);
        be.ropeForward(a.k, bt.g.tmp, B, NKV, T, HS, c.ropeTheta, 0);
      } else {
        be.toHeads(bt.g.tmp, a.qFlat, B, T, NH, HS);
        be.ropePartialForward(a.q, bt.g.tmp, B, NH, T, HS, ar.rotaryDims, c.ropeTheta, 0);
        be.toHeads(bt.g.tmp, a.kFlat, B, T, NKV, HS);
        be.ropePartialForward(a.k, bt.g.tmp, B, NKV, T, HS, ar.rotaryDims, c.ropeTheta, 0);
      }
      be.toHeads(a.v, a.vFlat, B, T, NKV, HS);
      if (w.wscore && a.uFlat && a.u) {
        be.matmulForward(a.uFlat, a.ln1, w.wscore, null, N, C, NKV);
        be.scoresToHeads(a.u, a.uFlat, B, T, NKV, c.scoreSlope);
      }
      a.attention.forward(a.att, a.q, a.k, a.v, a.u);
      be.fromHeads(a.attFlat, a.att, B, T, NH, HS);
      be.matmulForward(a.x2, a.attFlat, w.wo, w.bo, N, NH * HS, C);
      be.addInPlace(a.x2, a.x, N * C);
      // The MLP reads the stream after attention, or (parallel residual) the same x as attention.
      this.normForward(a.ln2, a.mean2, a.rstd2, ar.parallelResidual ? a.x : a.x2, w.ln2, w.ln2b, N);
      if (a.gate && w.wgate) {
        be.matmulForward(a.gate, a.ln2, w.wgate, w.bgate, N, C, Fw);
        be.matmulForward(a.up, a.ln2, w.wup, w.bup, N, C, Fw);
        be.swigluForward(a.h, a.gate, a.up, N * Fw);
      } else {
        be.matmulForward(a.up, a.ln2, w.wup, w.bup, N, C, Fw);
        be.geluForward(a.h, a.up, N * Fw, gelu);
      }
      const next = l + 1 < c.layers ? bt.acts[l + 1].x : bt.xf;
      be.matmulForward(next, a.h, w.wdown, w.bdown, N, Fw, C);
      be.addInPlace(next, a.x2, N * C);
    }
    this.normForward(bt.lnf, bt.meanf, bt.rstdf, bt.xf, p.lnf, p.lnfb, N);
    be.matmulForward(bt.logits, bt.lnf, p.lmHead ?? p.wte, null, N, C, V);
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

  /** out = norm(inp) with the config's norm: RMSNorm (mean unused) or LayerNorm (mean and bias set). */
  private normForward(out: F, mean: F | null, rstd: F, inp: F, weight: F, bias: F | null, N: number): void {
    const c = this.config;
    if (this.arch.norm === 'layer' && mean && bias) this.be.layernormForward(out, mean, rstd, inp, weight, bias, N, c.dim, c.normEps);
    else this.be.rmsnormForward(out, rstd, inp, weight, N, c.dim, c.normEps);
  }

  /** Backward of normForward, accumulating into dinp, dweight and dbias. */
  private normBackward(dinp: F, dweight: F, dbias: F | null, dout: F, inp: F, weight: F, mean: F | null, rstd: F, N: number): void {
    const C = this.config.dim;
    if (this.arch.norm === 'layer' && mean && dbias) this.be.layernormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
    else this.be.rmsnormBackward(dinp, dweight, dout, inp, weight, rstd, N, C);
  }

  /**
   * Per layer, what attention read in the last forward: k (B, NKV, T, HS) after RoPE, v (B, NKV, T, HS)
   * and the scores u (B, NKV, T) with the slope added (null unless sparsek). The batch's own buffers,
   * valid until the next forward: cached decoding's prefill (decode.ts) builds its cache from them.
   */
  attentionInputs(): { k: F; v: F; u: F | null }[] {
    if (!this.batch) throw new Error('Gpt.attentionInputs read before any forward');
    return this.batch.acts.map((a) => ({ k: a.k, v: a.v, u: a.u }));
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
    const ar = this.arch;
    const gelu: GeluForm = ar.mlp === 'gelu' ? 'erf' : 'tanh';
    let count = 0;
    for (let i = 0; i < N; i++) if (bt.hostTargets[i] >= 0) count++;
    be.zero(bt.dlogits);
    be.crossEntropyBackward(bt.dlogits, count > 0 ? 1 / count : 0, bt.probs, bt.targets, N, V);
    // logits = lnf head^T (head = wte when tied)
    be.zero(g.dln);
    be.matmulBackward(g.dln, gp.lmHead ?? gp.wte, null, bt.dlogits, bt.lnf, p.lmHead ?? p.wte, N, C, V);
    // lnf = norm(xf): dx is the gradient flowing down the residual stream.
    be.zero(g.dx);
    this.normBackward(g.dx, gp.lnf, gp.lnfb, g.dln, bt.xf, p.lnf, bt.meanf, bt.rstdf, N);
    for (let l = c.layers - 1; l >= 0; l--) {
      const a = bt.acts[l];
      const w = p.layers[l];
      const gw = gp.layers[l];
      if (ar.parallelResidual) {
        // x_next = x + attFlat Wo + mlp(norm2(x)): the attention branch takes dx before norm2 adds to it.
        be.zero(g.dattFlat);
        be.matmulBackward(g.dattFlat, gw.wo, gw.bo, g.dx, a.attFlat, w.wo, N, NH * HS, C);
      }
      // x_next = x2 + h Wdown: dx2 = dx (kept in g.dx), dh = dx Wdown
      be.zero(g.dh);
      be.matmulBackward(g.dh, gw.wdown, gw.bdown, g.dx, a.h, w.wdown, N, Fw, C);
      be.zero(g.dup);
      be.zero(g.dln);
      if (g.dgate && a.gate && w.wgate && gw.wgate) {
        be.zero(g.dgate);
        be.swigluBackward(g.dgate, g.dup, g.dh, a.gate, a.up, N * Fw);
        be.matmulBackward(g.dln, gw.wgate, gw.bgate, g.dgate, a.ln2, w.wgate, N, C, Fw);
      } else {
        be.geluBackward(g.dup, g.dh, a.up, N * Fw, gelu);
      }
      be.matmulBackward(g.dln, gw.wup, gw.bup, g.dup, a.ln2, w.wup, N, C, Fw);
      this.normBackward(g.dx, gw.ln2, gw.ln2b, g.dln, ar.parallelResidual ? a.x : a.x2, w.ln2, a.mean2, a.rstd2, N); // dx += d(ln2)/d(its input)
      if (!ar.parallelResidual) {
        // x2 = x + attFlat Wo: dx stays, dattFlat = dx Wo
        be.zero(g.dattFlat);
        be.matmulBackward(g.dattFlat, gw.wo, gw.bo, g.dx, a.attFlat, w.wo, N, NH * HS, C);
      }
      be.toHeads(g.datt, g.dattFlat, B, T, NH, HS);
      a.attention.backward(g.dq, g.dk, g.dv, a.u ? g.du : null, g.datt);
      if (ar.positions === 'learned') {
        be.fromHeads(g.dqFlat, g.dq, B, T, NH, HS);
        be.fromHeads(g.dkFlat, g.dk, B, T, NKV, HS);
      } else {
        be.zero(g.dqPre);
        be.zero(g.dkPre);
        if (ar.rotaryDims === HS) {
          be.ropeBackward(g.dqPre, g.dq, B, NH, T, HS, c.ropeTheta, 0);
          be.ropeBackward(g.dkPre, g.dk, B, NKV, T, HS, c.ropeTheta, 0);
        } else {
          be.ropePartialBackward(g.dqPre, g.dq, B, NH, T, HS, ar.rotaryDims, c.ropeTheta, 0);
          be.ropePartialBackward(g.dkPre, g.dk, B, NKV, T, HS, ar.rotaryDims, c.ropeTheta, 0);
        }
        be.fromHeads(g.dqFlat, g.dqPre, B, T, NH, HS);
        be.fromHeads(g.dkFlat, g.dkPre, B, T, NKV, HS);
      }
      be.fromHeads(g.dvFlat, g.dv, B, T, NKV, HS);
      be.zero(g.dln);
      be.matmulBackward(g.dln, gw.wq, gw.bq, g.dqFlat, a.ln1, w.wq, N, C, NH * HS);
      be.matmulBackward(g.dln, gw.wk, gw.bk, g.dkFlat, a.ln1, w.wk, N, C, NKV * HS);
      be.matmulBackward(g.dln, gw.wv, gw.bv, g.dvFlat, a.ln1, w.wv, N, C, NKV * HS);
      if (w.wscore && gw.wscore && a.u) {
        be.scoresFromHeads(g.duFlat, g.du, B, T, NKV);
        be.matmulBackward(g.dln, gw.wscore, null, g.duFlat, a.ln1, w.wscore, N, C, NKV);
      }
      this.normBackward(g.dx, gw.ln1, gw.ln1b, g.dln, a.x, w.ln1, a.mean1, a.rstd1, N);
    }
    be.embeddingBackward(gp.wte, g.dx, bt.ids, N, C);
    if (gp.wpe && bt.posIds) be.embeddingBackward(gp.wpe, g.dx, bt.posIds, N, C);
  }
}
