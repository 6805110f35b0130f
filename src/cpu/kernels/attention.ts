// Attention over an explicit per-query key pattern, and SparseK attention on top of it
// (SPEC.md section 4). Every attention type of this project (SparseK, and the baselines of section 6
// in baselines.ts) is "query i attends keys cols[0..n) with value gates gates[0..n)":
//
//   s_ij = scale * q_i . k_j,   a_ij = softmax_j(s_ij),   o_i = sum_j a_ij g_ij v_j
//
// so one forward/backward pair serves them all, and each type only says which keys a row has.
// Work is O(sum of row lengths * HS): O(T (K + W) HS) for SparseK. Scores and accumulators are
// float64 (JavaScript numbers); storage is whatever typed array the caller passes.
// Grouped-query attention: query head hq reads KV head floor(hq / (NH / NKV)).

import { AttentionShape, SelectOptions, checkAttentionInputs, checkShape, checkSelectOptions } from '../../core/check.js';
import { ShapeError } from '../../core/errors.js';
import { FlatSelection, allocSelection, selectCausalInto } from './selection.js';

/** Writable float storage: Float32Array for models, Float64Array for gradient checks. */
export type FloatArray = Float32Array | Float64Array;

/** The keys each query attends, and the gate on each key's value. */
export interface KeyPattern {
  /** Upper bound on the keys of any row (sizes scratch buffers). */
  maxKeys: number;
  /** true: rows differ per query head (qktopk, hash); false: one row per KV head, shared by its group. */
  perQueryHead: boolean;
  /** Writes the keys of query i (positions <= i) and their gates; returns how many. */
  row(b: number, head: number, i: number, cols: Int32Array, gates: Float64Array): number;
}

/** Receives dL/dg for one row of a pattern (aligned with the cols that row() wrote). */
export type GateGradSink = (b: number, hq: number, i: number, n: number, dg: Float64Array) => void;

export interface AttentionTensors {
  q: ArrayLike<number>; // (B, NH, T, HS)
  k: ArrayLike<number>; // (B, NKV, T, HS)
  v: ArrayLike<number>; // (B, NKV, T, HS)
}

/** Forward: out (B, NH, T, HS). */
export function patternAttentionForward(out: FloatArray, x: AttentionTensors, s: AttentionShape, pattern: KeyPattern): void {
  const { B, T, NH, NKV, HS } = s;
  const { q, k, v } = x;
  const group = NH / NKV;
  const scale = 1 / Math.sqrt(HS);
  const cols = new Int32Array(pattern.maxKeys);
  const gates = new Float64Array(pattern.maxKeys);
  const a = new Float64Array(pattern.maxKeys);
  const acc = new Float64Array(HS);
  for (let b = 0; b < B; b++) {
    for (let hq = 0; hq < NH; hq++) {
      const h = Math.floor(hq / group);
      const kvBase = (b * NKV + h) * T * HS;
      for (let i = 0; i < T; i++) {
        const qi = ((b * NH + hq) * T + i) * HS;
        const n = pattern.row(b, pattern.perQueryHead ? hq : h, i, cols, gates);
        softmaxRow(a, q, qi, k, kvBase, cols, n, HS, scale);
        acc.fill(0);
        for (let c = 0; c < n; c++) {
          const w = a[c] * gates[c];
          if (w === 0) continue;
          const vj = kvBase + cols[c] * HS;
          for (let d = 0; d < HS; d++) acc[d] += w * v[vj + d];
        }
        for (let d = 0; d < HS; d++) out[qi + d] = acc[d];
      }
    }
  }
}

/**
 * Backward of o_i = sum_j a_ij g_ij v_j with a_i = softmax(s_i), s_ij = scale q_i . k_j:
 *   dv_j += a_ij g_ij do_i            dg_ij = a_ij (do_i . v_j)
 *   da_ij = g_ij (do_i . v_j)         ds_ij = a_ij (da_ij - sum_j' a_ij' da_ij')
 *   dq_i += scale sum_j ds_ij k_j     dk_j += scale ds_ij q_i
 * Overwrites dq (B, NH, T, HS), dk and dv (B, NKV, T, HS). dg goes to onGateGrad when given.
 */
export function patternAttentionBackward(
  dq: FloatArray, dk: FloatArray, dv: FloatArray,
  dout: ArrayLike<number>, x: AttentionTensors, s: AttentionShape, pattern: KeyPattern, onGateGrad?: GateGradSink,
): void {
  const { B, T, NH, NKV, HS } = s;
  const { q, k, v } = x;
  const group = NH / NKV;
  const scale = 1 / Math.sqrt(HS);
  const cols = new Int32Array(pattern.maxKeys);
  const gates = new Float64Array(pattern.maxKeys);
  const a = new Float64Array(pattern.maxKeys);
  const dov = new Float64Array(pattern.maxKeys);
  const dg = new Float64Array(pattern.maxKeys);
  const dqi = new Float64Array(HS);
  // dk and dv gather contributions from many queries: accumulate them in float64.
  const dk64 = new Float64Array(dk.length);
  const dv64 = new Float64Array(dv.length);
  for (let b = 0; b < B; b++) {
    for (let hq = 0; hq < NH; hq++) {
      const h = Math.floor(hq / group);
      const kvBase = (b * NKV + h) * T * HS;
      for (let i = 0; i < T; i++) {
        const qi = ((b * NH + hq) * T + i) * HS;
        const n = pattern.row(b, pattern.perQueryHead ? hq : h, i, cols, gates);
        softmaxRow(a, q, qi, k, kvBase, cols, n, HS, scale);
        let D = 0;
        for (let c = 0; c < n; c++) {
          const vj = kvBase + cols[c] * HS;
          let dot = 0;
          for (let d = 0; d < HS; d++) dot += dout[qi + d] * v[vj + d];
          dov[c] = dot;
          dg[c] = a[c] * dot;
          D += a[c] * gates[c] * dot;
          const w = a[c] * gates[c];
          for (let d = 0; d < HS; d++) dv64[vj + d] += w * dout[qi + d];
        }
        dqi.fill(0);
        for (let c = 0; c < n; c++) {
          const ds = a[c] * (gates[c] * dov[c] - D) * scale;
          if (ds === 0) continue;
          const kj = kvBase + cols[c] * HS;
          for (let d = 0; d < HS; d++) {
            dqi[d] += ds * k[kj + d];
            dk64[kj + d] += ds * q[qi + d];
          }
        }
        for (let d = 0; d < HS; d++) dq[qi + d] = dqi[d];
        if (onGateGrad) onGateGrad(b, hq, i, n, dg);
      }
    }
  }
  dk.set(dk64);
  dv.set(dv64);
}

/** a[0..n) = softmax over c of scale * q[qi..] . k[kvBase + cols[c]*HS ..]. */
function softmaxRow(
  a: Float64Array, q: ArrayLike<number>, qi: number, k: ArrayLike<number>, kvBase: number,
  cols: Int32Array, n: number, HS: number, scale: number,
): void {
  let max = -Infinity;
  for (let c = 0; c < n; c++) {
    const kj = kvBase + cols[c] * HS;
    let dot = 0;
    for (let d = 0; d < HS; d++) dot += q[qi + d] * k[kj + d];
    const sc = dot * scale;
    a[c] = sc;
    if (sc > max) max = sc;
  }
  let sum = 0;
  for (let c = 0; c < n; c++) {
    const e = Math.exp(a[c] - max);
    a[c] = e;
    sum += e;
  }
  for (let c = 0; c < n; c++) a[c] /= sum;
}

// ---------------------------------------------------------------------------------------------
// SparseK attention

/** Selections for every (b, h) of u (B, NKV, T). */
export interface SparsekPlan {
  sel: FlatSelection[]; // index b * NKV + h
  u: ArrayLike<number>; // (B, NKV, T)
  K: number;
  W: number;
  T: number;
}

export function planSparsek(u: ArrayLike<number>, s: AttentionShape, o: SelectOptions): SparsekPlan {
  const { B, T, NKV } = s;
  const sel: FlatSelection[] = [];
  for (let bh = 0; bh < B * NKV; bh++) {
    const f = allocSelection(T, o.k);
    selectCausalInto(f, u, bh * T, T, o.k, o.window);
    sel.push(f);
  }
  return { sel, u, K: o.k, W: o.window, T };
}

/** Rows Win_i (gate 1) followed by Sel_i (gate clip(u_j - tau_i, 0, 1)). */
export function sparsekPattern(plan: SparsekPlan, NKV: number): KeyPattern {
  const { K, W, T, u } = plan;
  return {
    maxKeys: Math.min(T, K + W),
    perQueryHead: false,
    row(b, h, i, cols, gates) {
      let n = 0;
      for (let j = Math.max(0, i - W + 1); j <= i && W > 0; j++) {
        cols[n] = j;
        gates[n++] = 1;
      }
      const f = plan.sel[b * NKV + h];
      const tau = f.tau[i];
      const ub = (b * NKV + h) * T;
      for (let c = 0; c < f.count[i]; c++) {
        const j = f.sel[i * K + c];
        const d = u[ub + j] - tau;
        cols[n] = j;
        gates[n++] = d <= 0 ? 0 : d >= 1 ? 1 : d;
      }
      return n;
    },
  };
}

/**
 * SparseK attention forward (SPEC.md section 4): each query attends its window of W positions and
 * the k_i candidates selected by the scores u, gating the selected values by SparseK's p.
 *
 *     const { out } = sparsekAttention({ q, k, v, u }, { B: 1, T: 8, NH: 2, NKV: 1, HS: 4 }, { k: 2, window: 2 });
 */
export function sparsekAttention(
  inputs: AttentionTensors & { u: ArrayLike<number> },
  shape: AttentionShape,
  opts: SelectOptions,
): { out: Float32Array } {
  const s = checkShape(shape);
  const o = checkSelectOptions(opts);
  checkAttentionInputs(inputs, s, true);
  const out = new Float32Array(s.B * s.NH * s.T * s.HS);
  sparsekAttentionForwardInto(out, inputs, s, o);
  return { out };
}

/** Unchecked forward into a caller's buffer (layers and gradient checks use this). */
export function sparsekAttentionForwardInto(
  out: FloatArray, x: AttentionTensors & { u: ArrayLike<number> }, s: AttentionShape, o: SelectOptions,
): SparsekPlan {
  const plan = planSparsek(x.u, s, o);
  patternAttentionForward(out, x, s, sparsekPattern(plan, s.NKV));
  return plan;
}

/**
 * SparseK attention backward: gradients for q, k, v and the scores u.
 *
 *     const { dq, dk, dv, du } = sparsekAttentionBackward({ q, k, v, u }, shape, { k: 2, window: 2 }, dout);
 */
export function sparsekAttentionBackward(
  inputs: AttentionTensors & { u: ArrayLike<number> },
  shape: AttentionShape,
  opts: SelectOptions,
  dout: ArrayLike<number>,
): { dq: Float32Array; dk: Float32Array; dv: Float32Array; du: Float32Array } {
  const s = checkShape(shape);
  const o = checkSelectOptions(opts);
  checkAttentionInputs(inputs, s, true);
  const { B, T, NH, NKV, HS } = s;
  if (dout?.length !== B * NH * T * HS) {
    throw new ShapeError('dout', `length ${B * NH * T * HS} (B=${B}, NH=${NH}, T=${T}, HS=${HS})`, `length ${dout?.length}`);
  }
  const dq = new Float32Array(B * NH * T * HS);
  const dk = new Float32Array(B * NKV * T * HS);
  const dv = new Float32Array(B * NKV * T * HS);
  const du = new Float32Array(B * NKV * T);
  sparsekAttentionBackwardInto(dq, dk, dv, du, dout, inputs, s, o, planSparsek(inputs.u, s, o));
  return { dq, dk, dv, du };
}

/**
 * Unchecked backward into caller buffers, reusing the forward's plan.
 *
 * The gates are p^(i) = SparseK(u[Cand_i], k_i), so (section 1) with F_i = { j in Cand_i : 0 < p_ij < 1 }:
 *   du_j = sum_{i : j in F_i} (dg_ij - mean_{j' in F_i} dg_ij'),   dg_ij = 0 for j not in Sel_i.
 * F_i can hold far more than K candidates (equal scores put everyone in it), so the mean term is
 * not summed per query. Instead: tau_i never decreases, so { i : j in F_i } is an interval of
 * queries, found by binary search, and the mean term is a range sum of a prefix array. |F_i| is
 * counted with a Fenwick tree over score ranks. O(T log T + T K) per (b, h).
 */
export function sparsekAttentionBackwardInto(
  dq: FloatArray, dk: FloatArray, dv: FloatArray, du: FloatArray, dout: ArrayLike<number>,
  x: AttentionTensors & { u: ArrayLike<number> }, s: AttentionShape, o: SelectOptions, plan: SparsekPlan,
): void {
  const { B, T, NH, NKV } = s;
  const { k: K, window: W } = o;
  const group = NH / NKV;
  // dgSel: (B, NKV, T, K), dL/dg for slot c of Sel_i, summed over the query heads of the group.
  const dgSel = new Float64Array(B * NKV * T * K);
  const sink: GateGradSink = (b, hq, i, n, dg) => {
    const h = Math.floor(hq / group);
    const f = plan.sel[b * NKV + h];
    const nWin = n - f.count[i];
    const base = ((b * NKV + h) * T + i) * K;
    for (let c = nWin; c < n; c++) dgSel[base + c - nWin] += dg[c];
  };
  patternAttentionBackward(dq, dk, dv, dout, x, s, sparsekPattern(plan, NKV), K > 0 ? sink : undefined);
  du.fill(0);
  if (K === 0) return;
  // du gathers contributions from many queries: accumulate in float64, round once.
  const du64 = new Float64Array(du.length);
  for (let bh = 0; bh < B * NKV; bh++) {
    scoreGradient(du64, x.u, bh * T, T, K, W, plan.sel[bh], dgSel, bh * T * K);
  }
  du.set(du64);
}

/** du for one score row u[off .. off+T) from the selected-slot gradients (see above). */
function scoreGradient(
  du: Float64Array, u: ArrayLike<number>, off: number, T: number, K: number, W: number,
  f: FlatSelection, dgSel: Float64Array, dgOff: number,
): void {
  const tau = f.tau;
  const inF = (uj: number, t: number) => uj > t && uj - t < 1;
  // |F_i|: candidates j <= i - W with 0 < u_j - tau_i < 1, counted over score ranks.
  const order = Int32Array.from({ length: T }, (_, j) => j).sort((x, y) => u[off + x] - u[off + y]);
  const sorted = Float64Array.from(order, (j) => u[off + j]);
  const rank = new Int32Array(T);
  order.forEach((j, r) => (rank[j] = r));
  const tree = new Int32Array(T + 1);
  const mean = new Float64Array(T + 1); // prefix sums of mean_i
  for (let i = 0; i < T; i++) {
    const j = W > 0 ? i - W : i;
    if (j >= 0) for (let r = rank[j] + 1; r <= T; r += r & -r) tree[r]++;
    let m = 0;
    const t = tau[i];
    if (t > -Infinity) {
      // sorted is ascending, and both predicates below are monotone in u.
      const lo = firstIndex(T, (r) => sorted[r] > t);
      const hi = firstIndex(T, (r) => !(sorted[r] - t < 1));
      const nF = prefixCount(tree, hi) - prefixCount(tree, lo);
      if (nF > 0) {
        let sum = 0;
        for (let c = 0; c < f.count[i]; c++) {
          const jj = f.sel[i * K + c];
          if (inF(u[off + jj], t)) sum += dgSel[dgOff + i * K + c];
        }
        m = sum / nF;
      }
      // The direct term: selected members of F_i take their own dg.
      for (let c = 0; c < f.count[i]; c++) {
        const jj = f.sel[i * K + c];
        if (inF(u[off + jj], t)) du[off + jj] += dgSel[dgOff + i * K + c];
      }
    }
    mean[i + 1] = mean[i] + m;
  }
  // The mean term: j is in F_i exactly for i in [first i >= j + W with u_j - tau_i < 1, last i with u_j > tau_i].
  for (let j = 0; j < T; j++) {
    const uj = u[off + j];
    const start = j + W;
    if (start >= T) continue;
    const a = Math.max(start, firstIndex(T, (i) => uj - tau[i] < 1));
    const e = firstIndex(T, (i) => !(uj > tau[i])); // queries [a, e) have j in F
    if (e > a) du[off + j] -= mean[e] - mean[a];
  }
}

/** Smallest index in [0, n) where the monotone predicate turns true, or n. */
function firstIndex(n: number, pred: (i: number) => boolean): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (pred(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

function prefixCount(tree: Int32Array, r: number): number {
  let c = 0;
  for (; r > 0; r -= r & -r) c += tree[r];
  return c;
}
