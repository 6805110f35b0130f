// The SparseK operator (SPEC.md section 1): the Euclidean projection of scores z onto the capped
// simplex { 0 <= p <= 1, sum p = k }, and its vector-Jacobian product.
//
//   p_i = clip(z_i - tau, 0, 1),   tau = min { t : f(t) <= k },   f(t) = sum_i clip(z_i - t, 0, 1)
//
// f is continuous and non-increasing, so the threshold is well defined; when f is flat at k (the
// free set is empty) SPEC's "unique" tau is an interval, and we take its smallest point. That
// choice reproduces both of SPEC's conventions (k = 0 gives max(z), k = n gives -Infinity) and
// keeps tau monotone in causal selection (docs/decisions.md).
//
// Two algorithms: 'sort' walks the sorted breakpoints, O(n log n); 'linear' narrows an interval
// around tau by random pivots over the breakpoints {z_i} and {z_i - 1}, expected O(n).
// Both work on y = z - max(z), which keeps p exact for scores of large magnitude and small spread.
// Not here: causal selection over a sequence (selection.ts) or attention (attention.ts).

import { ArgumentError, ShapeError } from '../../core/errors.js';
import { checkFinite } from '../../core/check.js';

export type SparsekAlgorithm = 'sort' | 'linear';

/**
 * SparseK(z, k): the projection of z onto { p : 0 <= p_i <= 1, sum p = k }.
 * Returns p and the threshold tau with p_i = clip(z_i - tau, 0, 1).
 *
 *     sparsek([3, 1, 0.5], 1)    // { p: [1, 0, 0], tau: 1 }   (= sparsemax)
 *     sparsek([0, 0, 0, 0], 2)   // { p: [0.5, 0.5, 0.5, 0.5], tau: -0.5 }
 */
export function sparsek(
  z: ArrayLike<number>,
  k: number,
  algorithm: SparsekAlgorithm = 'linear',
): { p: Float64Array; tau: number } {
  const n = z.length;
  checkFinite('z', z);
  checkBudget(k, n);
  const p = new Float64Array(n);
  const tau = projectRow(z, 0, n, k, algorithm, p, 0, new Int32Array(algorithm === 'linear' ? n : 0));
  return { p, tau };
}

/**
 * SparseK applied to each of the rows of z (row-major, rows of length n), with one budget for all
 * rows or one per row. Returns p (same layout as z) and tau per row.
 */
export function sparsekRows(
  z: ArrayLike<number>,
  n: number,
  k: number | ArrayLike<number>,
  algorithm: SparsekAlgorithm = 'linear',
): { p: Float64Array; tau: Float64Array } {
  if (!Number.isInteger(n) || n < 1) throw new ArgumentError('n', 'a positive integer row length', n);
  if (z.length % n !== 0) throw new ShapeError('z', `a multiple of the row length ${n}`, `length ${z.length}`);
  checkFinite('z', z);
  const rows = z.length / n;
  if (typeof k !== 'number' && k.length !== rows) throw new ShapeError('k', `one budget per row (${rows})`, `length ${k.length}`);
  const p = new Float64Array(z.length);
  const tau = new Float64Array(rows);
  const scratch = new Int32Array(algorithm === 'linear' ? n : 0);
  for (let r = 0; r < rows; r++) {
    const kr = typeof k === 'number' ? k : k[r];
    checkBudget(kr, n);
    tau[r] = projectRow(z, r * n, n, kr, algorithm, p, r * n, scratch);
  }
  return { p, tau };
}

/**
 * Backward of SparseK from p alone: with F = { i : 0 < p_i < 1 },
 *   dz_i = [i in F] * (dp_i - mean_{j in F} dp_j)      (zero when F is empty)
 *
 *     sparsekBackward([1, 0.5, 0.5, 0], [1, 2, 4, 8])   // [0, -1, 1, 0]
 */
export function sparsekBackward(p: ArrayLike<number>, dp: ArrayLike<number>): Float64Array {
  if (p.length !== dp.length) throw new ShapeError('dp', `length ${p.length} (the length of p)`, `length ${dp.length}`);
  checkFinite('p', p);
  checkFinite('dp', dp);
  const dz = new Float64Array(p.length);
  backwardRow(p, dp, 0, p.length, dz, 0);
  return dz;
}

/** sparsekBackward on each row of length n. */
export function sparsekBackwardRows(p: ArrayLike<number>, dp: ArrayLike<number>, n: number): Float64Array {
  if (p.length !== dp.length) throw new ShapeError('dp', `length ${p.length} (the length of p)`, `length ${dp.length}`);
  if (!Number.isInteger(n) || n < 1 || p.length % n !== 0) throw new ArgumentError('n', `a positive divisor of ${p.length}`, n);
  checkFinite('p', p);
  checkFinite('dp', dp);
  const dz = new Float64Array(p.length);
  for (let off = 0; off < p.length; off += n) backwardRow(p, dp, off, n, dz, off);
  return dz;
}

function backwardRow(p: ArrayLike<number>, dp: ArrayLike<number>, off: number, n: number, dz: Float64Array, outOff: number): void {
  let count = 0;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const pi = p[off + i];
    if (pi > 0 && pi < 1) {
      count++;
      sum += dp[off + i];
    }
  }
  if (count === 0) return;
  const mean = sum / count;
  for (let i = 0; i < n; i++) {
    const pi = p[off + i];
    if (pi > 0 && pi < 1) dz[outOff + i] = dp[off + i] - mean;
  }
}

function checkBudget(k: number, n: number): void {
  if (typeof k !== 'number' || !(k >= 0 && k <= n)) throw new ArgumentError('k', `a real budget in [0, ${n}] (the length of z)`, k);
}

/** Projects z[off .. off+n) into p[outOff ..], returns tau. Budget already checked. */
function projectRow(
  z: ArrayLike<number>, off: number, n: number, k: number,
  algorithm: SparsekAlgorithm, p: Float64Array, outOff: number, scratch: Int32Array,
): number {
  if (k === n) {
    p.fill(1, outOff, outOff + n);
    return -Infinity;
  }
  let zmax = -Infinity;
  for (let i = 0; i < n; i++) if (z[off + i] > zmax) zmax = z[off + i];
  if (k === 0) {
    p.fill(0, outOff, outOff + n);
    return zmax;
  }
  // y = z - zmax, written into p, which becomes the output in place.
  for (let i = 0; i < n; i++) p[outOff + i] = z[off + i] - zmax;
  const ty = algorithm === 'sort' ? thresholdSorted(p, outOff, n, k) : thresholdLinear(p, outOff, n, k, scratch);
  for (let i = 0; i < n; i++) {
    const d = p[outOff + i] - ty;
    p[outOff + i] = d <= 0 ? 0 : d >= 1 ? 1 : d;
  }
  return zmax + ty;
}

/**
 * Walks t downward from +Infinity over the merged breakpoints of the sorted scores s (descending):
 * at t = s_i item i enters F, at t = s_i - 1 it moves on to U. On the segment below the current
 * point f(t) = |U| + sum_F s - |F| t. Stops on the first segment whose lower end has f > k.
 * Requires 0 < k < n.
 *
 * The running sum carries rounding, so "f > k" allows for it: where f is flat at exactly k
 * (F empty, |U| = k) a rounded f must not stop the walk early, or tau would be the flat
 * interval's largest point instead of its smallest. The allowance is a running bound on the
 * rounding actually committed (eps per operation, scaled by the magnitudes involved), so it
 * vanishes for tiny inputs instead of swamping them. The solution is clamped to its segment.
 */
function thresholdSorted(y: Float64Array, off: number, n: number, k: number): number {
  const s = Float64Array.from(y.subarray(off, off + n)).sort().reverse();
  const eps = Number.EPSILON;
  let sumErr = 0; // bound on the rounding error accumulated in sumF
  let iz = 0; // s[iz..] are still in Z
  let iu = 0; // s[..iu) are in U; F = s[iu..iz)
  let sumF = 0;
  let prev = Infinity; // upper end of the current segment
  let next: number;
  for (;;) {
    const tz = iz < n ? s[iz] : -Infinity;
    const tu = s[iu] - 1;
    next = tz >= tu ? tz : tu;
    // Below the last breakpoint every p is 1 and f = n > k: the answer lies above it.
    const last = iz === n && iu === n - 1;
    const nFnext = (iz - iu) * next;
    const tol = sumErr + 4 * eps * (iu + Math.abs(sumF) + Math.abs(nFnext));
    if (last || iu + sumF - nFnext > k + tol) break;
    if (tz >= tu) sumF += s[iz++];
    else sumF -= s[iu++];
    sumErr += eps * Math.abs(sumF);
    if (iz === iu) sumF = sumErr = 0; // F emptied: drop the running sum's rounding residue
    prev = next;
  }
  if (iz === iu) return next; // f flat at k on this whole segment: its lower end is the smallest tau
  // Sum F afresh: the running sum only chose the segment.
  let sum = 0;
  for (let i = iu; i < iz; i++) sum += s[i];
  const tau = (sum + iu - k) / (iz - iu);
  return tau < next ? next : tau > prev ? prev : tau;
}

/**
 * Expected-linear threshold: keeps an interval (lo, hi] with f(lo) > k >= f(hi) and the items
 * with a breakpoint strictly inside it ("open" items, indices in `open`). Items whose breakpoints
 * are both outside are folded into aggregates (count in U; count and sum in F). A random open
 * breakpoint splits the interval, as quickselect splits an array; when no open item remains, f is
 * linear on the interval and tau solves it. Requires 0 < k < n.
 */
function thresholdLinear(y: Float64Array, off: number, n: number, k: number, open: Int32Array): number {
  let lo = -Infinity;
  let hi = Infinity;
  let nU = 0;
  let nF = 0;
  let sumF = 0;
  let m = n;
  rngState = SEED;
  for (let i = 0; i < n; i++) open[i] = off + i;
  while (m > 0) {
    const pick = open[nextRandom() % m];
    const zp = y[pick];
    const t = (zp > lo && zp < hi) && ((nextRandom() & 1) === 0 || !(zp - 1 > lo)) ? zp : zp - 1;
    let f = nU + sumF - nF * t;
    for (let j = 0; j < m; j++) {
      const d = y[open[j]] - t;
      f += d <= 0 ? 0 : d >= 1 ? 1 : d;
    }
    if (f <= k) hi = t;
    else lo = t;
    // Fold items with no breakpoint inside (lo, hi) into the aggregates.
    let w = 0;
    for (let j = 0; j < m; j++) {
      const idx = open[j];
      const z = y[idx];
      if ((z > lo && z < hi) || (z - 1 > lo && z - 1 < hi)) open[w++] = idx;
      else if (z - 1 >= hi) nU++;
      else if (z >= hi) {
        nF++;
        sumF += z;
      } // else z <= lo: in Z on the whole interval
    }
    m = w;
  }
  // f(lo) > k >= f(hi) with f continuous forces nF > 0; the guard covers rounding in f's sums.
  if (nF === 0) return lo === -Infinity ? hi : lo;
  const tau = (sumF + nU - k) / nF;
  return tau < lo ? lo : tau > hi ? hi : tau;
}

// xorshift32: a fixed-seed generator for pivots, so results are reproducible run to run.
const SEED = 0x9e3779b9;
let rngState = SEED;
function nextRandom(): number {
  rngState ^= rngState << 13;
  rngState ^= rngState >>> 17;
  rngState ^= rngState << 5;
  return rngState >>> 0;
}
