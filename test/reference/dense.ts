// Plain float64 oracles for the kernel tests (SPEC.md sections 1, 3, 4): SparseK's threshold by
// bisection, sparsemax by its textbook sort, causal selection by brute force per query, and attention
// as a dense masked computation over the whole T x T matrix.
// Not fast and not clever on purpose: O(n^2) is fine. Independent of src/cpu/kernels (nothing is
// imported from there), so the kernels can be checked against it; only types come from src/core.

import type { AttentionShape } from '../../src/core/check.js';

/** f(t) = sum_i clip(z_i - t, 0, 1), evaluated directly. */
export function capSum(z: ArrayLike<number>, t: number): number {
  let f = 0;
  for (let i = 0; i < z.length; i++) f += Math.min(1, Math.max(0, z[i] - t));
  return f;
}

/**
 * tau = min { t : sum_i clip(z_i - t, 0, 1) <= k } by float64 bisection (docs/decisions.md: the
 * smallest such t). k = n gives -Infinity (every t qualifies); k = 0 comes out as max(z).
 */
export function bisectTau(z: ArrayLike<number>, k: number): number {
  const n = z.length;
  if (k >= n) return -Infinity;
  let zmin = Infinity;
  let zmax = -Infinity;
  for (let i = 0; i < n; i++) {
    zmin = Math.min(zmin, z[i]);
    zmax = Math.max(zmax, z[i]);
  }
  // f(lo) = n > k and f(hi) = 0 <= k; keep that invariant while halving.
  let lo = zmin - 1 - Math.abs(zmin) * 1e-15;
  let hi = zmax;
  for (let it = 0; it < 2200; it++) { // enough to reach subnormal thresholds
    const mid = lo + (hi - lo) / 2;
    if (!(mid > lo && mid < hi)) break;
    if (capSum(z, mid) <= k) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** p_i = clip(z_i - tau, 0, 1) for the bisection tau: the SparseK oracle. */
export function sparsekRef(z: ArrayLike<number>, k: number): { p: Float64Array; tau: number } {
  const tau = bisectTau(z, k);
  const p = new Float64Array(z.length);
  for (let i = 0; i < z.length; i++) p[i] = Math.min(1, Math.max(0, z[i] - tau));
  return { p, tau };
}

/** sparsemax(z) = argmin over the probability simplex of ||p - z||^2 (Martins & Astudillo 2016, by sorting). */
export function sparsemax(z: ArrayLike<number>): Float64Array {
  const s = Array.from(z).sort((a, b) => b - a);
  let cum = 0;
  let support = 0;
  let cumSupport = 0;
  for (let r = 0; r < s.length; r++) {
    cum += s[r];
    if (1 + (r + 1) * s[r] > cum) {
      support = r + 1;
      cumSupport = cum;
    }
  }
  const tau = (cumSupport - 1) / support;
  return Float64Array.from(z, (x) => Math.max(0, x - tau));
}

/** Per-query causal selection (SPEC.md section 3), one sort per query. */
export interface RefSelection {
  cand: number[][]; // Cand_i, ascending
  sel: number[][]; // Sel_i, ascending
  kq: number[]; // k_i
  tau: number[]; // tau_i by bisection over u[Cand_i]
  theta: number[]; // min u over Sel_i, -Infinity when empty
}

export function selectCausalRef(u: ArrayLike<number>, K: number, W: number): RefSelection {
  const T = u.length;
  const out: RefSelection = { cand: [], sel: [], kq: [], tau: [], theta: [] };
  for (let i = 0; i < T; i++) {
    const last = W > 0 ? i - W : i;
    const cand: number[] = [];
    for (let j = 0; j <= last; j++) cand.push(j);
    const ki = Math.min(K, cand.length);
    // (u_j, j) descending, lexicographically: the more recent wins a tie.
    const ranked = cand.slice().sort((a, b) => (u[b] !== u[a] ? u[b] - u[a] : b - a));
    const sel = ranked.slice(0, ki).sort((a, b) => a - b);
    let theta = -Infinity;
    if (sel.length > 0) theta = Math.min(...sel.map((j) => u[j]));
    out.cand.push(cand);
    out.sel.push(sel);
    out.kq.push(ki);
    out.tau.push(bisectTau(cand.map((j) => u[j]), ki));
    out.theta.push(theta);
  }
  return out;
}

/** gate(b, h, i, j): the value gate of key j for query i of KV head h, or undefined when masked out. */
export type GateFn = (b: number, h: number, i: number, j: number) => number | undefined;

/**
 * Dense masked attention in float64 over the T x T matrix, grouped-query:
 *   o_i = sum_{j allowed} softmax_j(q_i . k_j / sqrt(HS)) * gate_ij * v_j,   o_i = 0 when no key is allowed.
 * q: (B, NH, T, HS); k, v: (B, NKV, T, HS). Returns out (B, NH, T, HS).
 */
export function maskedAttentionRef(
  q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, s: AttentionShape, gate: GateFn,
): Float64Array {
  const { B, T, NH, NKV, HS } = s;
  const out = new Float64Array(B * NH * T * HS);
  const scale = 1 / Math.sqrt(HS);
  for (let b = 0; b < B; b++) {
    for (let hq = 0; hq < NH; hq++) {
      const h = Math.floor(hq / (NH / NKV));
      for (let i = 0; i < T; i++) {
        const qo = ((b * NH + hq) * T + i) * HS;
        const logits = new Float64Array(T).fill(-Infinity);
        const g = new Float64Array(T);
        let max = -Infinity;
        for (let j = 0; j < T; j++) {
          const gj = gate(b, h, i, j);
          if (gj === undefined) continue;
          const ko = ((b * NKV + h) * T + j) * HS;
          let dot = 0;
          for (let d = 0; d < HS; d++) dot += q[qo + d] * k[ko + d];
          logits[j] = dot * scale;
          g[j] = gj;
          max = Math.max(max, logits[j]);
        }
        if (max === -Infinity) continue;
        let sum = 0;
        for (let j = 0; j < T; j++) sum += Math.exp(logits[j] - max);
        for (let j = 0; j < T; j++) {
          const w = (Math.exp(logits[j] - max) / sum) * g[j];
          if (w === 0) continue;
          const vo = ((b * NKV + h) * T + j) * HS;
          for (let d = 0; d < HS; d++) out[qo + d] += w * v[vo + d];
        }
      }
    }
  }
  return out;
}

/** Causal attention (every j <= i, gate 1). */
export const causalMask: GateFn = (_b, _h, i, j) => (j <= i ? 1 : undefined);

/** Sliding window of W positions: i - W < j <= i, gate 1. */
export function windowMask(W: number): GateFn {
  return (_b, _h, i, j) => (j <= i && j > i - W ? 1 : undefined);
}

/**
 * SparseK mask (SPEC.md section 4): window keys with gate 1, selected keys with gate
 * clip(u_j - tau_i, 0, 1), from the brute-force selection of each (b, h) row of u (B, NKV, T).
 */
export function sparsekMask(u: ArrayLike<number>, s: AttentionShape, K: number, W: number): GateFn {
  const { B, T, NKV } = s;
  const rows: RefSelection[] = [];
  for (let bh = 0; bh < B * NKV; bh++) rows.push(selectCausalRef(Array.from(u).slice(bh * T, (bh + 1) * T), K, W));
  return (b, h, i, j) => {
    if (j > i) return undefined;
    if (W > 0 && j > i - W) return 1;
    const r = rows[b * NKV + h];
    if (!r.sel[i].includes(j)) return undefined;
    return Math.min(1, Math.max(0, u[(b * NKV + h) * T + j] - r.tau[i]));
  };
}

/** Dense float64 SparseK attention forward. */
export function sparsekAttentionRef(
  q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, u: ArrayLike<number>,
  s: AttentionShape, K: number, W: number,
): Float64Array {
  return maskedAttentionRef(q, k, v, s, sparsekMask(u, s, K, W));
}

/** Deterministic generator for test inputs (mulberry32): uniform in [0, 1). */
export function makeRng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n values uniform in [lo, hi). */
export function uniform(rng: () => number, n: number, lo = -1, hi = 1): Float64Array {
  return Float64Array.from({ length: n }, () => lo + (hi - lo) * rng());
}
