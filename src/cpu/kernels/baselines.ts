// Baseline attention types (SPEC.md section 6), for comparison with SparseK: each is a KeyPattern
// for attention.ts's patternAttentionForward/Backward with every value gate 1, behind the same
// interface as SparseK attention. Not here: score networks or generation caches (none of these
// has one), nor any attention math (attention.ts owns softmax, forward and backward).
//
// Keys of query i (0-based, always causal: j <= i), W the window, K the budget:
//   dense   j in 0..i.
//   window  j in max(0, i-W+1)..i.
//   fixed   Child et al. 2019, the strided "fixed" pattern: j with floor(j/W) = floor(i/W) (i's own
//           block of W) or j mod W = W-1 (the last, "summary" column of every block).
//   hash    angular LSH, as in Reformer: per KV head h a fixed Gaussian matrix R_h (HS, nb/2),
//           drawn from Rng(seed) (core/random.ts) as R_0, R_1, ... in row-major order;
//           bucket(x) = argmax over the nb values [x R_h, -x R_h] (ties to the lower index).
//           Query i of query head hq (with the R of hq's KV head) attends the keys j <= i with
//           bucket(k_j) = bucket(q_i), and always itself (j = i), so no row is empty.
//   qktopk  query i of query head hq attends Win_i (SPEC section 3) plus the K candidates
//           j <= i - W (W = 0: j <= i) with the largest (q_i . k_j, j), compared lexicographically
//           so the more recent wins a tie: exact top-K attention, O(T^2 HS), the accuracy oracle.
// hash and qktopk rows differ per query head (perQueryHead). Their key sets are piecewise constant
// in q and k, so no gradient flows through the hashing or the top-K choice: dq and dk come from the
// scores over the chosen keys only.
// Work: dense O(T^2 HS); window O(T W HS); fixed O(T (W + T/W) HS); hash O(sum of bucket sizes * HS)
// (T^2 / nb expected); qktopk O(T^2 HS) to score the candidates plus O(T (K + W) HS) of attention.

import { AttentionShape, checkAttentionInputs, checkFinite, checkInt, checkLength, checkShape } from '../../core/check.js';
import { ArgumentError } from '../../core/errors.js';
import { Rng } from '../../core/random.js';
import { AttentionTensors, FloatArray, KeyPattern, patternAttentionBackward, patternAttentionForward } from './attention.js';

/** The options of each baseline, by kind. */
export interface BaselineParams {
  dense: Record<never, never>;
  window: { window: number };
  fixed: { window: number };
  hash: { buckets: number; seed: number };
  qktopk: { k: number; window: number };
}

export type BaselineKind = keyof BaselineParams;

/** A validated baseline: the kind and its options, e.g. { kind: 'qktopk', k: 64, window: 64 }. */
export type BaselineOptions = { [K in BaselineKind]: { kind: K } & BaselineParams[K] }[BaselineKind];

export const baselineKinds: readonly BaselineKind[] = ['dense', 'window', 'fixed', 'hash', 'qktopk'];

/**
 * Checks a baseline's kind and options, throwing ArgumentError naming the bad one, and returns them
 * as one BaselineOptions value. window and fixed need W >= 1; hash needs an even bucket count
 * nb >= 2 (the buckets are the signs of nb/2 projections) and a seed in [0, 2^32); qktopk takes
 * K >= 0 and W >= 0 (both 0: rows are empty and the output is 0, as for SparseK).
 */
export function checkBaselineOptions(kind: unknown, opts: unknown): BaselineOptions {
  // Read fields through a plain record: each is range-checked before use.
  const p = (typeof opts === 'object' && opts !== null ? opts : {}) as Record<string, unknown>;
  switch (kind) {
    case 'dense':
      return { kind };
    case 'window':
    case 'fixed':
      return { kind, window: checkInt('opts.window', p.window, 1) };
    case 'hash': {
      const buckets = checkInt('opts.buckets', p.buckets, 2);
      if (buckets % 2 !== 0) throw new ArgumentError('opts.buckets', 'an even integer >= 2 (buckets come in pairs xR, -xR)', buckets);
      return { kind, buckets, seed: checkInt('opts.seed', p.seed, 0, 0xffffffff) };
    }
    case 'qktopk':
      return { kind, k: checkInt('opts.k', p.k, 0), window: checkInt('opts.window', p.window, 0) };
    default:
      throw new ArgumentError('kind', `one of ${baselineKinds.map((k) => `'${k}'`).join(', ')}`, kind);
  }
}

/**
 * Baseline attention forward: o_i = sum_{j in keys(i)} softmax_j(q_i . k_j / sqrt(HS)) v_j, with
 * keys(i) given by the kind (see the file header). q: (B, NH, T, HS); k, v: (B, NKV, T, HS).
 *
 *     const { out } = attentionForward('window', { q, k, v }, { B: 1, T: 8, NH: 2, NKV: 1, HS: 4 }, { window: 3 });
 *     const { out: o2 } = attentionForward('qktopk', { q, k, v }, shape, { k: 4, window: 2 });
 */
export function attentionForward<K extends BaselineKind>(
  kind: K, inputs: AttentionTensors, shape: AttentionShape, opts: BaselineParams[K],
): { out: Float32Array } {
  const s = checkShape(shape);
  const o = checkBaselineOptions(kind, opts);
  checkAttentionInputs(inputs, s, false);
  const out = new Float32Array(s.B * s.NH * s.T * s.HS);
  attentionForwardInto(out, inputs, s, o);
  return { out };
}

/**
 * Baseline attention backward: dq (B, NH, T, HS), dk and dv (B, NKV, T, HS) for upstream dout
 * (B, NH, T, HS). The key sets are held fixed (they are piecewise constant in q and k).
 *
 *     const { dq, dk, dv } = attentionBackward('fixed', { q, k, v }, shape, { window: 4 }, dout);
 */
export function attentionBackward<K extends BaselineKind>(
  kind: K, inputs: AttentionTensors, shape: AttentionShape, opts: BaselineParams[K], dout: ArrayLike<number>,
): { dq: Float32Array; dk: Float32Array; dv: Float32Array } {
  const s = checkShape(shape);
  const o = checkBaselineOptions(kind, opts);
  checkAttentionInputs(inputs, s, false);
  const { B, T, NH, NKV, HS } = s;
  checkLength('dout', dout, B * NH * T * HS, `(B=${B}, NH=${NH}, T=${T}, HS=${HS})`);
  checkFinite('dout', dout);
  const dq = new Float32Array(B * NH * T * HS);
  const dk = new Float32Array(B * NKV * T * HS);
  const dv = new Float32Array(B * NKV * T * HS);
  attentionBackwardInto(dq, dk, dv, dout, inputs, s, o);
  return { dq, dk, dv };
}

/** Unchecked forward into out (B, NH, T, HS) (layers and gradient checks use this). */
export function attentionForwardInto(out: FloatArray, x: AttentionTensors, s: AttentionShape, o: BaselineOptions): void {
  patternAttentionForward(out, x, s, patternOf(x, s, o));
}

/** Unchecked backward: overwrites dq (B, NH, T, HS), dk and dv (B, NKV, T, HS). */
export function attentionBackwardInto(
  dq: FloatArray, dk: FloatArray, dv: FloatArray,
  dout: ArrayLike<number>, x: AttentionTensors, s: AttentionShape, o: BaselineOptions,
): void {
  patternAttentionBackward(dq, dk, dv, dout, x, s, patternOf(x, s, o));
}

/**
 * The KeyPattern of a baseline for inputs x (hash and qktopk read q and k; the others only the shape).
 * Two forms: (kind, x, shape, opts) checks everything; (o, x, s) with an already validated
 * BaselineOptions is unchecked, like the Into functions (layers call it every step).
 *
 *     const p = baselinePattern('fixed', { q, k, v }, shape, { window: 4 });
 *     const n = p.row(0, 0, 9, cols, gates);   // cols[0..n) = [3, 7, 8, 9]
 */
export function baselinePattern<K extends BaselineKind>(
  kind: K, x: AttentionTensors, shape: AttentionShape, opts: BaselineParams[K],
): KeyPattern;
export function baselinePattern(o: BaselineOptions, x: AttentionTensors, s: AttentionShape): KeyPattern;
export function baselinePattern(
  kindOrOptions: BaselineKind | BaselineOptions, x: AttentionTensors, shape: AttentionShape, opts?: unknown,
): KeyPattern {
  if (typeof kindOrOptions === 'object' && kindOrOptions !== null) return patternOf(x, shape, kindOrOptions);
  const s = checkShape(shape);
  const o = checkBaselineOptions(kindOrOptions, opts);
  checkAttentionInputs(x, s, false);
  return patternOf(x, s, o);
}

function patternOf(x: AttentionTensors, s: AttentionShape, o: BaselineOptions): KeyPattern {
  switch (o.kind) {
    case 'dense':
      return windowPattern(s.T, s.T);
    case 'window':
      return windowPattern(s.T, o.window);
    case 'fixed':
      return fixedPattern(s.T, o.window);
    case 'hash':
      return hashPattern(x, s, o.buckets, o.seed);
    case 'qktopk':
      return qkTopkPattern(x, s, o.k, o.window);
  }
}

/** Keys max(0, i-W+1)..i; W = T is dense causal attention. One row per KV head. */
function windowPattern(T: number, W: number): KeyPattern {
  return {
    maxKeys: Math.min(T, W),
    perQueryHead: false,
    row(_b, _h, i, cols, gates) {
      let n = 0;
      for (let j = Math.max(0, i - W + 1); j <= i; j++) {
        cols[n] = j;
        gates[n++] = 1;
      }
      return n;
    },
  };
}

/** Summary columns W-1, 2W-1, ... of the blocks before i's, then i's block up to i. */
function fixedPattern(T: number, W: number): KeyPattern {
  // Row i holds floor(i/W) + (i mod W) + 1 keys, which grows within a block: the longest row ends
  // the last full block or the sequence.
  const keys = (i: number) => Math.floor(i / W) + (i % W) + 1;
  const lastFull = Math.floor(T / W) * W - 1;
  return {
    maxKeys: Math.max(keys(T - 1), lastFull >= 0 ? keys(lastFull) : 0),
    perQueryHead: false,
    row(_b, _h, i, cols, gates) {
      const start = i - (i % W);
      let n = 0;
      for (let j = W - 1; j < start; j += W) {
        cols[n] = j;
        gates[n++] = 1;
      }
      for (let j = start; j <= i; j++) {
        cols[n] = j;
        gates[n++] = 1;
      }
      return n;
    },
  };
}

/**
 * The hash planes: (NKV, HS, nb/2) standard normals from Rng(seed), R_h = planes[h*HS*nb/2 ..].
 * Exported so that tests can bucket independently with the same planes.
 */
export function hashPlanes(seed: number, NKV: number, HS: number, buckets: number): Float64Array {
  const rng = new Rng(seed);
  const planes = new Float64Array(NKV * HS * (buckets / 2));
  for (let i = 0; i < planes.length; i++) planes[i] = rng.normal();
  return planes;
}

/**
 * argmax over [x R, -x R] of x[xo .. xo+HS) with R = planes[ro ..] (HS, half), ties to the lower
 * index. dots (half) is scratch.
 */
function bucketOf(
  x: ArrayLike<number>, xo: number, planes: Float64Array, ro: number, HS: number, half: number, dots: Float64Array,
): number {
  dots.fill(0);
  for (let d = 0; d < HS; d++) {
    const xd = x[xo + d];
    const r = ro + d * half;
    for (let c = 0; c < half; c++) dots[c] += xd * planes[r + c];
  }
  let best = -Infinity;
  let arg = 0;
  for (let idx = 0; idx < 2 * half; idx++) {
    const v = idx < half ? dots[idx] : -dots[idx - half];
    if (v > best) {
      best = v;
      arg = idx;
    }
  }
  return arg;
}

/**
 * Keys of query (b, hq, i): the earlier keys of its KV head in its bucket, then i itself. Key
 * buckets are stored as per-(b, h, bucket) ascending position lists (CSR), so a row costs its length.
 */
function hashPattern(x: AttentionTensors, s: AttentionShape, nb: number, seed: number): KeyPattern {
  const { B, T, NH, NKV, HS } = s;
  const half = nb / 2;
  const group = NH / NKV;
  const planes = hashPlanes(seed, NKV, HS, nb);
  // qBucket: (B, NH, T); members: (B, NKV, nb) lists of positions in start/pos (CSR).
  const dots = new Float64Array(half);
  const qBucket = new Int32Array(B * NH * T);
  for (let b = 0; b < B; b++) {
    for (let hq = 0; hq < NH; hq++) {
      const ro = Math.floor(hq / group) * HS * half;
      for (let i = 0; i < T; i++) qBucket[(b * NH + hq) * T + i] = bucketOf(x.q, ((b * NH + hq) * T + i) * HS, planes, ro, HS, half, dots);
    }
  }
  const kBucket = new Int32Array(B * NKV * T);
  const start = new Int32Array(B * NKV * nb + 1);
  for (let bh = 0; bh < B * NKV; bh++) {
    const ro = (bh % NKV) * HS * half;
    for (let j = 0; j < T; j++) {
      const kb = bucketOf(x.k, (bh * T + j) * HS, planes, ro, HS, half, dots);
      kBucket[bh * T + j] = kb;
      start[bh * nb + kb + 1]++;
    }
  }
  for (let g = 0; g < B * NKV * nb; g++) start[g + 1] += start[g];
  const pos = new Int32Array(B * NKV * T);
  const fill = start.slice(0, B * NKV * nb);
  for (let bh = 0; bh < B * NKV; bh++) {
    for (let j = 0; j < T; j++) pos[fill[bh * nb + kBucket[bh * T + j]]++] = j; // ascending j per list
  }
  return {
    maxKeys: T,
    perQueryHead: true,
    row(b, hq, i, cols, gates) {
      const h = Math.floor(hq / group);
      const g = (b * NKV + h) * nb + qBucket[(b * NH + hq) * T + i];
      let n = 0;
      for (let c = start[g]; c < start[g + 1] && pos[c] < i; c++) {
        cols[n] = pos[c];
        gates[n++] = 1;
      }
      cols[n] = i;
      gates[n++] = 1;
      return n;
    },
  };
}

/**
 * Keys of query (b, hq, i): the top-K candidates by (q_i . k_j, j), ascending, then Win_i. The
 * unscaled dot gives the same order as the scores. A min-heap of K (score, position) pairs keeps
 * the best seen so far; candidates arrive in increasing j, so an equal score replaces the minimum.
 */
function qkTopkPattern(x: AttentionTensors, s: AttentionShape, K: number, W: number): KeyPattern {
  const { T, NH, NKV, HS } = s;
  const { q, k } = x;
  const group = NH / NKV;
  const hs = new Float64Array(K); // heap scores
  const hp = new Int32Array(K); // heap positions
  return {
    maxKeys: Math.min(T, K + W),
    perQueryHead: true,
    row(b, hq, i, cols, gates) {
      const qi = ((b * NH + hq) * T + i) * HS;
      const kvBase = (b * NKV + Math.floor(hq / group)) * T * HS;
      const last = W > 0 ? i - W : i; // candidates 0..last
      let n = 0;
      if (K > 0 && last >= 0) {
        if (last + 1 <= K) {
          for (let j = 0; j <= last; j++) cols[n++] = j;
        } else {
          let size = 0;
          for (let j = 0; j <= last; j++) {
            const kj = kvBase + j * HS;
            let dot = 0;
            for (let d = 0; d < HS; d++) dot += q[qi + d] * k[kj + d];
            if (size < K) heapPush(hs, hp, size++, dot, j);
            else if (dot >= hs[0]) heapReplaceMin(hs, hp, size, dot, j);
          }
          cols.set(hp.subarray(0, K));
          cols.subarray(0, K).sort();
          n = K;
        }
      }
      for (let j = W > 0 ? Math.max(0, i - W + 1) : i + 1; j <= i; j++) cols[n++] = j;
      gates.fill(1, 0, n);
      return n;
    },
  };
}

// Min-heap on (score, position), lexicographic: the root is the weakest selected candidate.
function heapLess(s1: number, p1: number, s2: number, p2: number): boolean {
  return s1 < s2 || (s1 === s2 && p1 < p2);
}

function heapPush(hs: Float64Array, hp: Int32Array, size: number, score: number, pos: number): void {
  let i = size;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (!heapLess(score, pos, hs[parent], hp[parent])) break;
    hs[i] = hs[parent];
    hp[i] = hp[parent];
    i = parent;
  }
  hs[i] = score;
  hp[i] = pos;
}

function heapReplaceMin(hs: Float64Array, hp: Int32Array, size: number, score: number, pos: number): void {
  let i = 0;
  for (;;) {
    let c = 2 * i + 1;
    if (c >= size) break;
    if (c + 1 < size && heapLess(hs[c + 1], hp[c + 1], hs[c], hp[c])) c++;
    if (!heapLess(hs[c], hp[c], score, pos)) break;
    hs[i] = hs[c];
    hp[i] = hp[c];
    i = c;
  }
  hs[i] = score;
  hp[i] = pos;
}
