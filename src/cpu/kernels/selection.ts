// Causal selection (SPEC.md section 3): for every query i, the SparseK threshold tau_i over its
// candidates Cand_i = { j <= i - W } (W = 0: j <= i), the hard top-k_i set Sel_i by (u_j, j), and
// theta_i, the score of Sel_i's weakest member. k_i = min(K, |Cand_i|).
//
// Because u does not depend on the query, each step adds one candidate and both thresholds only
// rise: a candidate that falls out never returns. CausalSelector exploits this: it keeps the
// selection in a min-heap (eviction = pop), and the candidates still in the support of SparseK in
// two heaps, U (p = 1) and F (0 < p < 1), walking tau upward over their breakpoints. Each candidate
// enters and leaves each heap at most once: O(log T) amortised per step, O(T log T) in all, plus
// O(T K) to write out the selected sets. The generation cache (SPEC section 5) uses the same class.
// Not here: the gates' use in attention (attention.ts).

import { checkFinite, checkInt } from '../../core/check.js';

/** Streaming selection state for one score sequence (one batch row and KV head). */
export class CausalSelector {
  /** SparseK threshold over the candidates pushed so far (-Infinity while k_i = |Cand_i|). */
  tau = -Infinity;
  /** Score of the weakest selected candidate (-Infinity while none is selected). */
  theta = -Infinity;
  /** Number of candidates pushed so far. */
  candidates = 0;
  /** Position evicted from the selection by the last push, or -1. */
  lastEvicted = -1;
  /** Whether the last pushed candidate entered the selection. */
  lastAccepted = false;
  /** Times the support list hit supportCap and dropped its weakest score (SPEC section 5). */
  capHits = 0;

  private readonly sel: PairHeap; // Sel: min-heap on (u, position)
  private readonly selPos: Int32Array; // Sel's positions, ascending
  private selCount = 0;
  private readonly upper = new ScoreHeap(); // U: candidates with u - tau >= 1
  private readonly free = new ScoreHeap(); // F: candidates with 0 < u - tau < 1
  private readonly sumF = new CompensatedSum();

  /** supportCap bounds the scalar support list; Infinity (the default) keeps tau exact. */
  constructor(readonly K: number, readonly supportCap = Infinity) {
    this.sel = new PairHeap(K);
    this.selPos = new Int32Array(K);
  }

  /** Positions in Sel, ascending. A view: valid until the next push. */
  selected(): Int32Array {
    return this.selPos.subarray(0, this.selCount);
  }

  /** Number of candidates still in the support of SparseK (u > tau): the scalars tau depends on. */
  get supportSize(): number {
    return this.upper.size + this.free.size;
  }

  /** Adds candidate `pos` with score u; pos must exceed every earlier position. */
  push(u: number, pos: number): void {
    this.candidates++;
    this.pushSelection(u, pos);
    this.pushThreshold(u);
    while (this.supportSize > this.supportCap) {
      // The only approximation of the cache: forget the weakest support score.
      if (this.free.size > 0) this.sumF.add(-this.free.pop());
      else this.upper.pop();
      if (this.free.size === 0) this.sumF.reset();
      this.capHits++;
    }
  }

  /** Bytes held by this selector's scalar state (heaps grow by doubling, so this is capacity). */
  get bytes(): number {
    return this.selPos.byteLength + this.sel.bytes + this.upper.bytes + this.free.bytes;
  }

  private pushSelection(u: number, pos: number): void {
    this.lastEvicted = -1;
    this.lastAccepted = false;
    const K = this.K;
    if (K === 0) return;
    if (this.sel.size < K) {
      this.lastAccepted = true;
      this.sel.push(u, pos);
      this.selPos[this.selCount++] = pos;
    } else if (u >= this.sel.minScore()) {
      // (u, pos) beats the weakest (s, p) lexicographically: pos is the newest, so ties go to it.
      const out = this.sel.replaceMin(u, pos);
      this.lastEvicted = out;
      this.lastAccepted = true;
      const at = lowerBound(this.selPos, this.selCount, out);
      this.selPos.copyWithin(at, at + 1, this.selCount);
      this.selPos[this.selCount - 1] = pos;
    }
    this.theta = this.sel.minScore();
  }

  private pushThreshold(u: number): void {
    const K = this.K;
    if (this.candidates <= K) {
      this.upper.push(u); // k_i = |Cand_i|: every p is 1, tau = -Infinity
      return;
    }
    let cur = this.tau;
    if (!(u > cur)) {
      // u <= tau: p = 0 now, and tau never falls, so this candidate is done for good.
    } else if (u - cur >= 1) this.upper.push(u);
    else this.addFree(u);
    // Raise tau: the smallest t >= cur with f(t) = |U| + sum_F u - |F| t <= K. On each segment
    // between breakpoints f is linear; at a breakpoint an F member leaves (u = t) or a U member
    // turns free (u - 1 = t).
    for (;;) {
      const tF = this.free.size > 0 ? this.free.min() : Infinity;
      const tU = this.upper.size > 0 ? this.upper.min() - 1 : Infinity;
      const next = tF <= tU ? tF : tU;
      const nF = this.free.size;
      const nFnext = nF * next;
      const fNext = this.upper.size + this.sumF.value - nFnext;
      // Allow for rounding (the sum is compensated, so a few eps of the magnitudes involved):
      // where f is flat at exactly K, a rounded f must not carry tau past the flat part's start.
      const tol = 4 * Number.EPSILON * (this.upper.size + Math.abs(this.sumF.value) + Math.abs(nFnext));
      if (fNext <= K + tol || next === Infinity) {
        const t = nF > 0 ? (this.sumF.value + this.upper.size - K) / nF : cur;
        this.tau = t > cur ? (t < next ? t : next) : cur;
        // Members sitting exactly at tau have p = 0 and, tau never falling, are done for good.
        while (this.free.size > 0 && this.free.min() <= this.tau) this.sumF.add(-this.free.pop());
        if (this.free.size === 0) this.sumF.reset();
        return;
      }
      cur = next;
      if (tF <= tU) this.sumF.add(-this.free.pop());
      else this.addFree(this.upper.pop());
      if (this.free.size === 0) this.sumF.reset();
    }
  }

  private addFree(u: number): void {
    this.free.push(u);
    this.sumF.add(u);
  }
}

/** Flat result of causal selection for one score row: sel is (T, K), count is (T). */
export interface FlatSelection {
  tau: Float64Array; // (T)
  theta: Float64Array; // (T)
  sel: Int32Array; // (T, K): Sel_i in sel[i*K .. i*K + count[i]), ascending
  count: Int32Array; // (T)
}

/** Selection for u[off .. off+T) into preallocated flat arrays. */
export function selectCausalInto(out: FlatSelection, u: ArrayLike<number>, off: number, T: number, K: number, W: number): void {
  const s = new CausalSelector(K);
  for (let i = 0; i < T; i++) {
    const j = W > 0 ? i - W : i; // the candidate that query i adds
    if (j >= 0) s.push(u[off + j], j);
    out.tau[i] = s.tau;
    out.theta[i] = s.theta;
    const sel = s.selected();
    out.sel.set(sel, i * K);
    out.count[i] = sel.length;
  }
}

export function allocSelection(T: number, K: number): FlatSelection {
  return { tau: new Float64Array(T), theta: new Float64Array(T), sel: new Int32Array(T * K), count: new Int32Array(T) };
}

/**
 * Causal SparseK selection for one score sequence u (length T), SPEC.md section 3.
 * For each query i: tau[i], theta[i], and selected[i] (positions, ascending).
 *
 *     selectCausal([0.3, 2, 1, 5], { k: 1, window: 1 }).selected   // [[], [0], [1], [1]]
 */
export function selectCausal(
  u: ArrayLike<number>,
  opts: { k: number; window: number },
): { tau: Float64Array; theta: Float64Array; selected: Int32Array[] } {
  const K = checkInt('opts.k', opts?.k, 0);
  const W = checkInt('opts.window', opts.window, 0);
  checkFinite('u', u);
  const T = u.length;
  const flat = allocSelection(T, K);
  selectCausalInto(flat, u, 0, T, K, W);
  const selected: Int32Array[] = [];
  for (let i = 0; i < T; i++) selected.push(flat.sel.subarray(i * K, i * K + flat.count[i]));
  return { tau: flat.tau, theta: flat.theta, selected };
}

function lowerBound(xs: Int32Array, n: number, x: number): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Neumaier-compensated running sum: members are added and removed many times. */
class CompensatedSum {
  private s = 0;
  private c = 0;
  get value(): number {
    return this.s + this.c;
  }
  add(x: number): void {
    const t = this.s + x;
    if (Math.abs(this.s) >= Math.abs(x)) this.c += this.s - t + x;
    else this.c += x - t + this.s;
    this.s = t;
  }
  reset(): void {
    this.s = 0;
    this.c = 0;
  }
}

/** Binary min-heap of scores, growing by doubling. */
class ScoreHeap {
  private a = new Float64Array(16);
  size = 0;
  get bytes(): number {
    return this.a.byteLength;
  }
  min(): number {
    return this.a[0];
  }
  push(x: number): void {
    if (this.size === this.a.length) {
      const b = new Float64Array(this.a.length * 2);
      b.set(this.a);
      this.a = b;
    }
    const a = this.a;
    let i = this.size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (a[parent] <= x) break;
      a[i] = a[parent];
      i = parent;
    }
    a[i] = x;
  }
  pop(): number {
    const a = this.a;
    const top = a[0];
    const x = a[--this.size];
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= this.size) break;
      if (c + 1 < this.size && a[c + 1] < a[c]) c++;
      if (a[c] >= x) break;
      a[i] = a[c];
      i = c;
    }
    a[i] = x;
    return top;
  }
}

/** Fixed-capacity min-heap of (score, position) pairs, ordered lexicographically. */
class PairHeap {
  private readonly s: Float64Array;
  private readonly p: Int32Array;
  size = 0;
  constructor(capacity: number) {
    this.s = new Float64Array(capacity);
    this.p = new Int32Array(capacity);
  }
  get bytes(): number {
    return this.s.byteLength + this.p.byteLength;
  }
  minScore(): number {
    return this.size > 0 ? this.s[0] : -Infinity;
  }
  private less(s1: number, p1: number, s2: number, p2: number): boolean {
    return s1 < s2 || (s1 === s2 && p1 < p2);
  }
  push(score: number, pos: number): void {
    let i = this.size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(score, pos, this.s[parent], this.p[parent])) break;
      this.s[i] = this.s[parent];
      this.p[i] = this.p[parent];
      i = parent;
    }
    this.s[i] = score;
    this.p[i] = pos;
  }
  /** Replaces the minimum with (score, pos) and returns the evicted position. */
  replaceMin(score: number, pos: number): number {
    const out = this.p[0];
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= this.size) break;
      if (c + 1 < this.size && this.less(this.s[c + 1], this.p[c + 1], this.s[c], this.p[c])) c++;
      if (!this.less(this.s[c], this.p[c], score, pos)) break;
      this.s[i] = this.s[c];
      this.p[i] = this.p[c];
      i = c;
    }
    this.s[i] = score;
    this.p[i] = pos;
    return out;
  }
}
