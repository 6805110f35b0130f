// Token-by-token decoding on the GPU with the constant-memory cache (SPEC.md section 5): the CUDA
// counterpart of src/model/decode.ts, with the same cache logic. K/V vectors live in device
// memory, allocated once: per layer, a ring of W slots and K selected slots per KV head (dense:
// every position, grown by doubling, for comparison). The scalar side (scores, positions and the
// CausalSelector that decides admissions and evictions) stays on the host: it is a few numbers per
// head and step, and each step downloads only the NKV new scores per layer.
// With batchPrefill (the default; off, prefill steps through the prompt token by token),
// prefill(ids) runs the prompt through one forward of the CUDA Gpt (fp32), replays the scores
// through the host selectors as the steps would, and gathers the rings' and selected slots' K/V
// from the forward's k and v with the embedding gather (one launch per buffer and layer); the
// limits are those of the CPU Decoder's prefill (prefillMax, first support-cap hit; model/decode.ts).
// Not here: bf16.

import { CausalSelector } from '../cpu/kernels/selection.js';
import { ArgumentError } from '../core/errors.js';
import type { ModelConfig } from '../model/config.js';
import { arch, headSize, isLlamaBlock } from '../model/config.js';
import type { Params } from '../model/params.js';
import { allocParamsOn } from '../model/params.js';
import type { CacheStats } from '../model/decode.js';
import { checkPrompt } from '../model/decode.js';
import { Gpt } from '../model/gpt.js';
import { checkInt } from '../core/check.js';
import { CudaBackend, CudaBuffer, CudaIntBuffer } from './backend.js';
import { decodeAttentionSource, kvWriteSource, DECODE_BLOCK } from './kernels/decode.js';
import type { Kernel } from './runtime.js';

/** One layer's device cache and its host-side bookkeeping. */
interface LayerCache {
  kRing: CudaBuffer; // (NKV, ringCap, HS)
  vRing: CudaBuffer; // (NKV, ringCap, HS)
  kSel: CudaBuffer; // (NKV, K, HS)
  vSel: CudaBuffer; // (NKV, K, HS)
  gates: CudaBuffer; // (NKV, K)
  ringU: Float32Array; // (NKV, ringCap) scores of the ring's positions (sparsek)
  selPos: Int32Array; // (NKV, K)
  selU: Float32Array; // (NKV, K)
  selectors: CausalSelector[]; // (NKV)
}

export class CudaDecoder {
  private readonly p: Params<CudaBuffer>;
  private readonly layers: LayerCache[] = [];
  private ringCap: number;
  private selCount = 0;
  private pos = 0;
  private keysLastStep = 0;
  private readonly kernel: Kernel;
  private readonly kvWrite: Kernel;
  private scores: CudaBuffer;
  private readonly id: CudaIntBuffer;
  private readonly hostId = new Int32Array(1);
  private readonly x: CudaBuffer;
  private readonly ln: CudaBuffer;
  private readonly rstd: CudaBuffer;
  private readonly q: CudaBuffer;
  private readonly qr: CudaBuffer;
  private readonly k: CudaBuffer;
  private readonly kr: CudaBuffer;
  private readonly v: CudaBuffer;
  private readonly u: CudaBuffer;
  private readonly att: CudaBuffer;
  private readonly tmp: CudaBuffer;
  private readonly gate: CudaBuffer;
  private readonly up: CudaBuffer;
  private readonly h: CudaBuffer;
  private readonly logits: CudaBuffer;
  private readonly hostGates: Float32Array;
  private readonly prefillMax: number;
  private readonly batchPrefill: boolean;

  /**
   * Options as the CPU Decoder's: supportCap (default 4K), prefillMax (default context). batchPrefill
   * (default true) makes prefill() run the batched forward; false, prefill() steps through the prompt
   * (the reference test/cuda/decode.test.ts compares with).
   */
  constructor(readonly config: ModelConfig, host: Params, readonly be: CudaBackend,
    opts: { supportCap?: number; prefillMax?: number; batchPrefill?: boolean } = {}) {
    const c = config;
    if (!CudaDecoder.supports(c)) {
      throw new ArgumentError('config', 'sparsek, window or dense attention in a Llama-style block (RMSNorm, SwiGLU, full RoPE, no biases, tied head) for cached decoding on CUDA', `${c.attention}, ${JSON.stringify(arch(c))}`);
    }
    const HS = headSize(c);
    const NKV = c.kvHeads;
    const K = c.attention === 'sparsek' ? c.k : 0;
    this.p = allocParamsOn(c, be);
    be.upload(this.p.flat, host.flat);
    this.ringCap = c.attention === 'dense' ? 256 : c.window;
    const supportCap = Math.max(opts.supportCap ?? 4 * c.k, c.k + 1);
    this.prefillMax = opts.prefillMax === undefined ? c.context : checkInt('opts.prefillMax', opts.prefillMax, 1);
    this.batchPrefill = opts.batchPrefill ?? true;
    for (let l = 0; l < c.layers; l++) {
      this.layers.push({
        kRing: be.alloc(Math.max(1, NKV * this.ringCap * HS)),
        vRing: be.alloc(Math.max(1, NKV * this.ringCap * HS)),
        kSel: be.alloc(Math.max(1, NKV * K * HS)),
        vSel: be.alloc(Math.max(1, NKV * K * HS)),
        gates: be.alloc(Math.max(1, NKV * K)),
        ringU: new Float32Array(NKV * this.ringCap),
        selPos: new Int32Array(NKV * K),
        selU: new Float32Array(NKV * K),
        selectors: c.attention === 'sparsek' ? Array.from({ length: NKV }, () => new CausalSelector(c.k, supportCap)) : [],
      });
    }
    this.hostGates = new Float32Array(NKV * K);
    this.kernel = be.rt.kernel(decodeAttentionSource());
    this.kvWrite = be.rt.kernel(kvWriteSource());
    this.scores = be.alloc(c.heads * (this.ringCap + K + 1));
    this.id = be.allocInt(1);
    const f = (n: number) => be.alloc(n);
    this.x = f(c.dim);
    this.ln = f(c.dim);
    this.rstd = f(1);
    this.q = f(c.heads * HS);
    this.qr = f(c.heads * HS);
    this.k = f(NKV * HS);
    this.kr = f(NKV * HS);
    this.v = f(NKV * HS);
    this.u = f(NKV);
    this.att = f(c.heads * HS);
    this.tmp = f(c.dim);
    this.gate = f(c.ffnDim);
    this.up = f(c.ffnDim);
    this.h = f(c.ffnDim);
    this.logits = f(c.vocabSize);
  }

  /**
   * The models step() decodes: sparsek, window or dense attention in the native block (what step()
   * computes: RMSNorm, SwiGLU, full RoPE, no biases, the head tied to the embedding). Others
   * (GPT-2, NeoX, Qwen2's biases, untied heads) decode with generate's RecomputeDecoder on the GPU.
   */
  static supports(c: ModelConfig): boolean {
    const a = arch(c);
    return (c.attention === 'sparsek' || c.attention === 'window' || c.attention === 'dense') && isLlamaBlock(c) &&
      !a.qkvBias && !a.outBias && !a.mlpBias && a.tieEmbeddings;
  }

  get length(): number {
    return this.pos;
  }

  /** Device bytes of the K/V cache plus the host selectors' scalar state. */
  stats(): CacheStats {
    let bytes = 0;
    let capHits = 0;
    for (const L of this.layers) {
      bytes += 4 * (L.kRing.length + L.vRing.length + L.kSel.length + L.vSel.length + L.gates.length);
      bytes += L.ringU.byteLength + L.selPos.byteLength + L.selU.byteLength;
      for (const s of L.selectors) {
        bytes += s.bytes;
        capHits += s.capHits;
      }
    }
    return { bytes, capHits, keysLastStep: this.keysLastStep };
  }

  /** Consumes token id at the next position; returns the logits (V) for the token after it. */
  step(id: number): Float32Array {
    const c = this.config;
    const be = this.be;
    const p = this.p;
    const C = c.dim;
    const HS = headSize(c);
    const NH = c.heads;
    const NKV = c.kvHeads;
    const F = c.ffnDim;
    const i = this.pos;
    if (c.attention === 'dense' && i === this.ringCap) this.growRing();
    this.hostId[0] = id;
    be.uploadInt(this.id, this.hostId);
    be.embeddingForward(this.x, this.id, p.wte, 1, C);
    this.keysLastStep = 0;
    for (let l = 0; l < c.layers; l++) {
      const w = p.layers[l];
      const L = this.layers[l];
      be.rmsnormForward(this.ln, this.rstd, this.x, w.ln1, 1, C, c.normEps);
      be.matmulForward(this.q, this.ln, w.wq, null, 1, C, NH * HS);
      be.matmulForward(this.k, this.ln, w.wk, null, 1, C, NKV * HS);
      be.matmulForward(this.v, this.ln, w.wv, null, 1, C, NKV * HS);
      // With T = 1 the (T, NH*HS) and (NH, T, HS) layouts coincide.
      be.ropeForward(this.qr, this.q, 1, NH, 1, HS, c.ropeTheta, i);
      be.ropeForward(this.kr, this.k, 1, NKV, 1, HS, c.ropeTheta, i);
      let u: Float32Array | null = null;
      if (w.wscore) {
        be.matmulForward(this.u, this.ln, w.wscore, null, 1, C, NKV);
        u = Float32Array.from(be.download(this.u), (x) => x + c.scoreSlope * i); // rounded to float32 as on the CPU
      }
      for (let h = 0; h < NKV; h++) this.admit(L, h, i, u);
      // Position i enters every head's ring (after admit() has read the slot it overwrites).
      if (c.attention === 'dense' || c.window > 0) {
        const slot = c.attention === 'dense' ? i : i % c.window;
        be.rt.launch(this.kvWrite, NKV, Math.min(HS, 128), 0, [L.kRing.ptr, L.vRing.ptr, this.kr.ptr, this.v.ptr, slot, this.ringCap, HS]);
      }
      const nRing = c.attention === 'dense' ? i + 1 : Math.min(c.window, i + 1);
      const nSel = this.selCount;
      if (nSel > 0) {
        for (let h = 0; h < NKV; h++) {
          const tau = L.selectors[h].tau;
          for (let s = 0; s < nSel; s++) {
            const d = L.selU[h * c.k + s] - tau;
            this.hostGates[h * c.k + s] = d <= 0 ? 0 : d >= 1 ? 1 : d;
          }
        }
        be.upload(L.gates, this.hostGates);
      }
      const maxKeys = this.scores.length / NH;
      be.rt.launch(this.kernel, NH, DECODE_BLOCK, 0, [
        this.att.ptr, this.qr.ptr, L.kRing.ptr, L.vRing.ptr, nRing, this.ringCap,
        L.kSel.ptr, L.vSel.ptr, L.gates.ptr, nSel, Math.max(1, c.attention === 'sparsek' ? c.k : 1),
        this.scores.ptr, maxKeys, NH, NKV, HS, 1 / Math.sqrt(HS),
      ]);
      this.keysLastStep += NH * (nRing + nSel);
      be.matmulForward(this.tmp, this.att, w.wo, null, 1, NH * HS, C);
      be.addInPlace(this.x, this.tmp, C);
      be.rmsnormForward(this.ln, this.rstd, this.x, w.ln2, 1, C, c.normEps);
      be.matmulForward(this.gate, this.ln, w.wgate!, null, 1, C, F); // SwiGLU: supports() admits Llama-style models only
      be.matmulForward(this.up, this.ln, w.wup, null, 1, C, F);
      be.swigluForward(this.h, this.gate, this.up, F);
      be.matmulForward(this.tmp, this.h, w.wdown, null, 1, F, C);
      be.addInPlace(this.x, this.tmp, C);
    }
    be.rmsnormForward(this.ln, this.rstd, this.x, p.lnf, 1, C, c.normEps);
    be.matmulForward(this.logits, this.ln, p.wte, null, 1, C, c.vocabSize);
    this.pos++;
    return be.download(this.logits);
  }

  /**
   * Consumes a prompt; returns the logits (V) after its last token, leaving the cache as stepping
   * through it would. As the CPU Decoder's prefill(): one batched forward over the first
   * min(T, prefillMax) ids, up to the first support-cap hit; the rest (and a prompt after earlier
   * steps) step by step. The forward's model (parameters, gradients, activations) lives in device
   * memory only while this runs.
   */
  prefill(ids: number[]): Float32Array {
    const c = this.config;
    const V = c.vocabSize;
    checkPrompt(ids, V);
    let n = 0; // ids consumed by the batch
    let logits: Float32Array = new Float32Array(0);
    if (this.pos === 0 && this.batchPrefill) {
      const HS = headSize(c);
      const NH = c.heads;
      const NKV = c.kvHeads;
      const W = c.window;
      const K = c.attention === 'sparsek' ? c.k : 0;
      const T = Math.min(ids.length, this.prefillMax);
      // The steps run in fp32 whatever the backend's precision: so does the forward.
      const be = this.be.precision === 'fp32' ? this.be : new CudaBackend(this.be.rt);
      const model = new Gpt(c, be);
      this.copy(model.params.flat, 0, this.p.flat, 0, this.p.flat.length);
      model.forward(ids.slice(0, T), 1, T);
      const inputs = model.attentionInputs(); // per layer: k, v (NKV, T, HS), u (NKV, T)
      const us = inputs.map((a) => (a.u ? be.download(a.u) : null));
      // Host side: the selectors see the scores in step order (admit()'s slot rule), up to the
      // first step with a cap hit (its tau was computed before the drop: rows up to it are exact).
      let capped = false;
      while (n < T && !capped) {
        const i = n++;
        if (c.attention !== 'sparsek') continue;
        const j = W > 0 ? i - W : i;
        if (j < 0) continue;
        for (let l = 0; l < c.layers; l++) {
          const L = this.layers[l];
          const u = us[l]!;
          for (let h = 0; h < NKV; h++) {
            const sel = L.selectors[h];
            const uj = u[h * T + j];
            sel.push(uj, j);
            if (sel.lastAccepted) {
              let slot = sel.lastEvicted >= 0 ? L.selPos.subarray(h * K, (h + 1) * K).indexOf(sel.lastEvicted) : sel.selected().length - 1;
              if (slot < 0) slot = 0; // unreachable, as in admit()
              L.selPos[h * K + slot] = j;
              L.selU[h * K + slot] = uj;
            }
            if (sel.capHits > 0) capped = true;
          }
        }
      }
      if (c.attention === 'dense') while (this.ringCap < n) this.growRing();
      // Device side: ring slot r holds the newest position p < n with p % W = r (dense: p = r);
      // selected slot s of head h holds selPos. Rows of the forward's (NKV * T, HS) k and v; unused
      // slots get row 0 (never read: attention reads the first nRing / nSel slots).
      const ringRows = new Int32Array(NKV * this.ringCap);
      for (let h = 0; h < NKV; h++) {
        for (let r = 0; r < this.ringCap; r++) {
          let p = -1;
          if (c.attention === 'dense') p = r < n ? r : -1;
          else if (r < n) p = r + W * Math.floor((n - 1 - r) / W);
          ringRows[h * this.ringCap + r] = p >= 0 ? h * T + p : 0;
        }
      }
      const rows = be.allocInt(Math.max(1, ringRows.length, NKV * K));
      const selRows = new Int32Array(NKV * K);
      const nSel = K > 0 ? this.layers[0].selectors[0].selected().length : 0;
      for (let l = 0; l < c.layers; l++) {
        const L = this.layers[l];
        const { k, v } = inputs[l];
        if (this.ringCap > 0) {
          be.uploadInt(rows, ringRows);
          be.embeddingForward(L.kRing, rows, k, NKV * this.ringCap, HS);
          be.embeddingForward(L.vRing, rows, v, NKV * this.ringCap, HS);
          const u = us[l];
          if (u && W > 0) {
            for (let h = 0; h < NKV; h++) for (let p = Math.max(0, n - W); p < n; p++) L.ringU[h * W + (p % W)] = u[h * T + p];
          }
        }
        if (K > 0) {
          for (let h = 0; h < NKV; h++) {
            for (let s = 0; s < K; s++) selRows[h * K + s] = s < nSel ? h * T + L.selPos[h * K + s] : 0;
          }
          be.uploadInt(rows, selRows);
          be.embeddingForward(L.kSel, rows, k, NKV * K, HS);
          be.embeddingForward(L.vSel, rows, v, NKV * K, HS);
        }
      }
      this.pos = n;
      this.selCount = nSel;
      this.keysLastStep = c.layers * NH * ((c.attention === 'dense' ? n : Math.min(W, n)) + nSel);
      logits = be.download(be.view(model.logits, (n - 1) * V, V));
      be.rt.synchronize(); // the gathers read model's buffers: done before they go back to the arena
      be.free(rows);
      model.dispose();
    }
    for (let t = n; t < ids.length; t++) logits = this.step(ids[t]);
    return logits;
  }

  /** As the CPU decoder's admit(): candidate i - W may enter the selection (step() then writes i into the ring). */
  private admit(L: LayerCache, h: number, i: number, u: Float32Array | null): void {
    const c = this.config;
    const HS = headSize(c);
    const W = c.window;
    if (c.attention === 'dense') return; // the ring write is one launch for all heads, in step()
    if (c.attention === 'sparsek') {
      const sel = L.selectors[h];
      const j = W > 0 ? i - W : i;
      if (j >= 0) {
        const uj = W > 0 ? L.ringU[h * W + (j % W)] : u![h];
        sel.push(uj, j);
        if (sel.lastAccepted) {
          let slot = sel.lastEvicted >= 0 ? L.selPos.subarray(h * c.k, (h + 1) * c.k).indexOf(sel.lastEvicted) : sel.selected().length - 1;
          if (slot < 0) slot = 0; // unreachable: the evicted position is always in the table
          L.selPos[h * c.k + slot] = j;
          L.selU[h * c.k + slot] = uj;
          const dst = (h * c.k + slot) * HS;
          if (W > 0) {
            this.copy(L.kSel, dst, L.kRing, (h * W + (j % W)) * HS, HS);
            this.copy(L.vSel, dst, L.vRing, (h * W + (j % W)) * HS, HS);
          } else {
            this.copy(L.kSel, dst, this.kr, h * HS, HS);
            this.copy(L.vSel, dst, this.v, h * HS, HS);
          }
        }
        if (h === 0) this.selCount = sel.selected().length;
      }
    }
    if (W > 0 && u) L.ringU[h * W + (i % W)] = u[h];
  }

  /** dst[dstOff .. +n) = src[srcOff .. +n), on the stream. */
  private copy(dst: CudaBuffer, dstOff: number, src: CudaBuffer, srcOff: number, n: number): void {
    this.be.rt.cu('cuMemcpyDtoDAsync_v2', dst.ptr + BigInt(dstOff * 4), src.ptr + BigInt(srcOff * 4), n * 4, this.be.rt.stream);
  }

  /** Dense only: doubles the per-head capacity, keeping each head's prefix. */
  private growRing(): void {
    const c = this.config;
    const HS = headSize(c);
    const NKV = c.kvHeads;
    const cap = this.ringCap * 2;
    for (const L of this.layers) {
      const k = this.be.alloc(NKV * cap * HS);
      const v = this.be.alloc(NKV * cap * HS);
      for (let h = 0; h < NKV; h++) {
        this.copy(k, h * cap * HS, L.kRing, h * this.ringCap * HS, this.ringCap * HS);
        this.copy(v, h * cap * HS, L.vRing, h * this.ringCap * HS, this.ringCap * HS);
      }
      this.be.free(L.kRing);
      this.be.free(L.vRing);
      L.kRing = k;
      L.vRing = v;
    }
    this.be.free(this.scores);
    this.scores = this.be.alloc(c.heads * (cap + 1));
    this.ringCap = cap;
  }

  /** Frees the device memory. */
  dispose(): void {
    const be = this.be;
    for (const L of this.layers) for (const b of [L.kRing, L.vRing, L.kSel, L.vSel, L.gates]) be.free(b);
    for (const b of [this.scores, this.x, this.ln, this.rstd, this.q, this.qr, this.k, this.kr, this.v, this.u, this.att, this.tmp, this.gate, this.up, this.h, this.logits]) be.free(b);
    be.free(this.id);
    be.free(this.p.flat);
  }
}
