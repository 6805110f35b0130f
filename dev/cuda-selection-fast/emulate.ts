// CPU emulation of the fast selection (kernel.ts), step for step, in float64 like the kernels' double
// arithmetic: the merge-sort tree, the anchors (Phase A) and the per-block walks (Phase B). It exists
// to check the algorithm exactly against src/cpu/kernels/selection.ts (CausalSelector) without a GPU;
// bench.ts runs it. Not here: timing, the device code itself (kernel.ts).
//
// Keys: the kernels pack (ord(u) << 32 | j) in a u64; here ord(u) * 2^21 + j, exact in a double while
// T <= 2^21, with the same order.

export const CHUNK = 64; // queries per Phase B block = positions per tree leaf = spacing of sel rows
const JB = 2 ** 21;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The order-preserving map of float bits to uint32 (-0 taken as +0), as the kernels' ord_of. */
export function ordOf(x: number): number {
  f32[0] = x === 0 ? 0 : x;
  const b = u32[0];
  return (b & 0x80000000) !== 0 ? ~b >>> 0 : (b | 0x80000000) >>> 0;
}
function valOfOrd(o: number): number {
  u32[0] = (o & 0x80000000) !== 0 ? (o & 0x7fffffff) >>> 0 : ~o >>> 0;
  return f32[0];
}
const keyOf = (x: number, j: number): number => ordOf(x) * JB + j;
const keyOrd = (k: number): number => Math.floor(k / JB);
const keyPos = (k: number): number => k % JB;
const keyVal = (k: number): number => valOfOrd(keyOrd(k));
/** Smallest key whose value is > t (as floats), for double t. */
function keyGt(t: number): number {
  const f = Math.fround(t);
  return (ordOf(f) + (f <= t ? 1 : 0)) * JB;
}
/** Smallest key whose value is >= t. */
function keyGe(t: number): number {
  const f = Math.fround(t);
  return (ordOf(f) + (f < t ? 1 : 0)) * JB;
}

/** Merge-sort tree of one row over x = j + d (d aligns leaves to the blocks' candidate prefixes). */
interface Tree {
  T: number;
  d: number;
  Tx: number; // padded length, a multiple of CHUNK; pads have key 0, value 0
  levels: { keys: Float64Array; psum: Float64Array }[]; // level l: nodes of CHUNK << l, sorted ascending, inclusive prefix sums
}

/** First index in [lo, hi) of a with a[i] >= k (a ascending). */
function lowerBound(a: Float64Array, lo: number, hi: number, k: number): number {
  while (lo < hi) {
    const m = (lo + hi) >> 1;
    if (a[m] < k) lo = m + 1;
    else hi = m;
  }
  return lo;
}

/** Builds the tree as sparsek_tree_merge does: levels of node size 1, 2, 4, ..., each element's rank in its sibling. */
export function buildTree(u: ArrayLike<number>, T: number, W: number): Tree {
  const d = (((W - 1) % CHUNK) + CHUNK) % CHUNK;
  const Tx = Math.ceil((T + d) / CHUNK) * CHUNK;
  let keys = new Float64Array(Tx);
  let psum = new Float64Array(Tx);
  for (let j = 0; j < T; j++) {
    keys[j + d] = keyOf(u[j], j);
    psum[j + d] = Math.fround(u[j]);
  }
  const levels: Tree['levels'] = [];
  for (let s = 1; ; s *= 2) {
    if (s >= CHUNK) levels.push({ keys, psum });
    if (s >= Tx) break;
    const nk = new Float64Array(Tx), ns = new Float64Array(Tx);
    for (let x = 0; x < Tx; x++) {
      const node = Math.floor(x / s), a = x - node * s;
      const sib = node ^ 1, sb0 = sib * s, sb1 = Math.min(Tx, sb0 + s);
      const k = keys[x];
      // rank among the sibling: keys are unique except pads (0); the left node wins ties
      const rb = sb0 >= Tx ? 0 : lowerBound(keys, sb0, sb1, (node & 1) === 0 ? k : k + 0.5) - sb0;
      const out = Math.floor(node / 2) * 2 * s + a + rb;
      nk[out] = k;
      ns[out] = psum[x] + (rb > 0 ? psum[sb0 + rb - 1] : 0);
    }
    keys = nk;
    psum = ns;
  }
  return { T, d, Tx, levels };
}

/** Count and sum of the values of candidates j < n (j in [0, n)) with key >= kappa: tree nodes + tail (csn below). */
function cs(tr: Tree, u: ArrayLike<number>, n: number, kappa: number): { c: number; s: number } {
  const { c, s } = csn(tr, u, n, kappa);
  return { c, s };
}

export interface Anchor { thk: number; tau: number; next: number }

/** cs() plus the nearest candidate keys around kappa: the smallest >= kappa (up) and the largest below (dn). */
function csn(tr: Tree, u: ArrayLike<number>, n: number, kappa: number): { c: number; s: number; up: number; dn: number } {
  let c = 0, s = 0, up = Infinity, dn = -Infinity;
  const m = Math.floor((n + tr.d) / CHUNK);
  let start = 0;
  for (let l = tr.levels.length - 1; l >= 0; l--) {
    if ((m & (1 << l)) === 0) continue;
    const { keys, psum } = tr.levels[l];
    const x0 = start * CHUNK, x1 = Math.min(tr.Tx, x0 + (CHUNK << l));
    const lb = lowerBound(keys, x0, x1, kappa);
    c += x1 - lb;
    s += psum[x1 - 1] - (lb > x0 ? psum[lb - 1] : 0);
    if (lb < x1) up = Math.min(up, keys[lb]);
    if (lb > x0 && keys[lb - 1] > 0) dn = Math.max(dn, keys[lb - 1]); // (pads: key 0)
    start += 1 << l;
  }
  for (let j = Math.max(0, m * CHUNK - tr.d); j < n; j++) {
    const k = keyOf(u[j], j);
    if (k >= kappa) { c++; s += Math.fround(u[j]); up = Math.min(up, k); } else dn = Math.max(dn, k);
  }
  return { c, s, up, dn };
}
const valOr = (k: number, inf: number): number => (Number.isFinite(k) ? keyVal(k) : inf);

/**
 * The segment [lo, hi] between adjacent breakpoints (candidate values v and v - 1) where f crosses K, by
 * safeguarded Newton steps: f is linear between breakpoints, so one evaluation at t (two counts, with the
 * nearest keys around t and t + 1) gives t's segment and the root of its line; a root inside the segment
 * ends the search, else the next t is that root (or the bracket's midpoint). [a, b] brackets tau; t0 is
 * the first guess. Null after maxIt evaluations.
 */
export function tauSegment(tr: Tree, u: ArrayLike<number>, n: number, K: number, a: number, b: number, t0: number,
  maxIt = 8): { lo: number; hi: number; evals: number } | null {
  let t = Math.min(b, Math.max(a, t0));
  for (let it = 1; it <= maxIt; it++) {
    const A = csn(tr, u, n, keyGt(t)), B = csn(tr, u, n, keyGe(t + 1));
    const nF = A.c - B.c, sF = A.s - B.s;
    const L = Math.max(valOr(A.dn, -Infinity), valOr(B.dn, -Infinity) - 1);
    const H = Math.min(valOr(A.up, Infinity), valOr(B.up, Infinity) - 1);
    const root = nF > 0 ? (B.c + sF - K) / nF : B.c > K ? Infinity : -Infinity;
    if (root >= L && root <= H) return { lo: L, hi: H, evals: it };
    if (root > H) a = Math.max(a, H);
    else b = Math.min(b, L);
    const next = root > a && root < b ? root : (a + b) / 2;
    if (next === t) return null;
    t = next;
  }
  return null;
}

/** tau on the segment [lo, hi] where f crosses K (as the kernels: counts at lo and lo + 1, clamped). */
function tauOn(tr: Tree, u: ArrayLike<number>, n: number, K: number, lo: number, hi: number): number {
  if (!(lo < hi)) return lo;
  const a = cs(tr, u, n, keyGt(lo)), b = cs(tr, u, n, keyGt(lo + 1));
  const nF = a.c - b.c;
  const t = nF > 0 ? (a.s - b.s + b.c - K) / nF : lo;
  return t < lo ? lo : t > hi ? hi : t;
}

/** Counts of the anchors' Newton searches for tau (evaluations, and fallbacks to the breakpoint searches). */
export const newtonStats = { anchors: 0, evals: 0, fallbacks: 0, maxEvals: 0 };

/** f(t) over the first n candidates, and the rounding allowance of its comparison with K. */
function fAt(tr: Tree, u: ArrayLike<number>, n: number, t: number): { f: number; tol: number } {
  const a = cs(tr, u, n, keyGt(t)), b = cs(tr, u, n, keyGe(t + 1));
  const nF = a.c - b.c, sF = a.s - b.s;
  return { f: b.c + sF - t * nF, tol: 4 * Number.EPSILON * (b.c + Math.abs(sF) + Math.abs(t * nF)) };
}

/**
 * Phase A for one anchor with n > K candidates: the K-th largest key (thk) by a search over the
 * row's sorted keys (the root), and tau by Newton steps between breakpoints (tauSegment), or, where
 * those fail, by two searches over the breakpoints u and u - 1. (The kernels' thk search ends in a walk
 * through the last 512 keys; same result.)
 */
export function anchor(tr: Tree, u: ArrayLike<number>, n: number, K: number): Anchor {
  const root = tr.levels[tr.levels.length - 1].keys;
  const first = tr.Tx - tr.T; // real keys sit at [first, Tx)
  // largest y with count(key >= root[y]) >= r
  const kth = (r: number): number => {
    let lo = first, hi = tr.Tx - 1;
    while (lo < hi) {
      const m = (lo + hi + 1) >> 1;
      if (cs(tr, u, n, root[m]).c >= r) lo = m;
      else hi = m - 1;
    }
    return root[lo];
  };
  const nk = kth(K + 1);
  const next = keyVal(nk);
  if (K === 0) return { thk: -1, tau: next, next };
  const thk = kth(K);
  const theta = keyVal(thk);
  if (next <= theta - 1) return { thk, tau: next, next };
  // the segment where f crosses K by Newton steps from theta - 1, else (never seen) by two searches over the
  // breakpoints: smallest y with f(g(root[y])) <= K, or Tx
  const seg = tauSegment(tr, u, n, K, theta - 1, theta, theta - 1);
  newtonStats.anchors++;
  if (seg !== null) {
    newtonStats.evals += seg.evals;
    newtonStats.maxEvals = Math.max(newtonStats.maxEvals, seg.evals);
    return { thk, tau: tauOn(tr, u, n, K, seg.lo, seg.hi), next };
  }
  newtonStats.fallbacks++;
  const search = (g: (v: number) => number): number => {
    let lo = first, hi = tr.Tx;
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      const { f, tol } = fAt(tr, u, n, g(keyVal(root[m])));
      if (f <= K + tol) hi = m;
      else lo = m + 1;
    }
    return lo;
  };
  const ye = search((v) => v), yx = search((v) => v - 1);
  let lo = -Infinity, hi = Infinity;
  if (ye > first) lo = Math.max(lo, keyVal(root[ye - 1]));
  if (yx > first) lo = Math.max(lo, keyVal(root[yx - 1]) - 1);
  if (ye < tr.Tx) hi = Math.min(hi, keyVal(root[ye]));
  if (yx < tr.Tx) hi = Math.min(hi, keyVal(root[yx]) - 1);
  const tau = tauOn(tr, u, n, K, lo, hi);
  return { thk, tau, next };
}

export interface FastSelection {
  tau: Float64Array; // (T)
  thk: (number | 'zero' | 'ones')[]; // (T) key, or 0 / ~0 as the kernels write
  count: Int32Array; // (T)
  nfree: Int32Array; // (T)
  rows: Int32Array[]; // (T) Sel_i ascending (every row: the 'all' mode)
  stats: { anchors: number; walkSteps: number; csCalls: number };
}

/** The whole fast selection of one row, as the kernels compute it. */
export function fastSelect(u: ArrayLike<number>, T: number, K: number, W: number): FastSelection {
  const tr = buildTree(u, T, W);
  const root = tr.levels[tr.levels.length - 1].keys;
  const nb = Math.ceil(T / CHUNK);
  const iF = K + W; // first full query
  const nOf = (i: number): number => Math.max(0, Math.min(T, i - W + 1));
  // Phase A: anchors b = 0..nb at base a_b = max(64 b, iF)
  const anchors: (Anchor | null)[] = [];
  for (let b = 0; b <= nb; b++) {
    const n = nOf(Math.max(CHUNK * b, iF));
    anchors.push(n > K ? anchor(tr, u, n, K) : null);
  }
  // sel rows at block starts
  const selRow: Int32Array[] = [];
  for (let b = 0; b < nb; b++) {
    const n = nOf(CHUNK * b);
    const out: number[] = [];
    if (n <= K) for (let j = 0; j < n; j++) out.push(j);
    else {
      const thk = anchors[b]!.thk;
      for (let j = 0; j < n; j++) if (K > 0 && keyOf(u[j], j) >= thk) out.push(j);
    }
    selRow.push(Int32Array.from(out));
  }
  const res: FastSelection = {
    tau: new Float64Array(T), thk: new Array(T), count: new Int32Array(T), nfree: new Int32Array(T), rows: new Array(T),
    stats: { anchors: nb + 1, walkSteps: 0, csCalls: 0 },
  };
  // Phase B
  for (let b = 0; b < nb; b++) {
    const i0 = CHUNK * b, i1 = Math.min(T, i0 + CHUNK);
    const lo = anchors[b], hi = anchors[b + 1];
    const nlo = nOf(Math.max(i0, iF));
    // per block: the P part of the aggregates, and the walk ranges in the root
    let P: { thkHi: number; gtLo: { c: number; s: number }; geLo1: { c: number; s: number }; gtHi: number; yThk: number;
      yE0: number; yE1: number; yX0: number; yX1: number } | null = null;
    if (hi !== null && lo !== null && K > 0) {
      const thkGt = cs(tr, u, nlo, hi.thk + 1).c;
      P = {
        thkHi: thkGt, gtLo: cs(tr, u, nlo, keyGt(lo.tau)), geLo1: cs(tr, u, nlo, keyGe(lo.tau + 1)), gtHi: cs(tr, u, nlo, keyGt(hi.tau)).c,
        yThk: lowerBound(root, 0, tr.Tx, hi.thk),
        yE0: lowerBound(root, 0, tr.Tx, keyGt(lo.tau)), yE1: lowerBound(root, 0, tr.Tx, keyGt(hi.tau)),
        yX0: lowerBound(root, 0, tr.Tx, keyGe(lo.tau + 1)), yX1: lowerBound(root, 0, tr.Tx, keyGt(hi.tau + 1)),
      };
      res.stats.csCalls += 4;
    }
    for (let i = i0; i < i1; i++) {
      const n = nOf(i);
      if (n <= K) {
        res.tau[i] = -Infinity; res.thk[i] = 'zero'; res.count[i] = n; res.nfree[i] = 0;
        res.rows[i] = Int32Array.from({ length: n }, (_, j) => j);
        continue;
      }
      if (K === 0) {
        let mx = lo!.tau;
        for (let j = nlo; j < n; j++) mx = Math.max(mx, Math.fround(u[j]));
        res.tau[i] = mx; res.thk[i] = 'ones'; res.count[i] = 0; res.nfree[i] = 0; res.rows[i] = new Int32Array(0);
        continue;
      }
      const p = P!;
      // tail: candidates [nlo, n) that P does not hold
      let aThk = p.thkHi, u0 = p.geLo1.c, gtLoC = p.gtLo.c, gtLoS = p.gtLo.s, ge1S = p.geLo1.s, gtHi = p.gtHi;
      for (let j = nlo; j < n; j++) {
        const k = keyOf(u[j], j), v = Math.fround(u[j]);
        if (k > hi!.thk) aThk++;
        if (k >= keyGt(lo!.tau)) { gtLoC++; gtLoS += v; }
        if (k >= keyGe(lo!.tau + 1)) { u0++; ge1S += v; }
        if (k >= keyGt(hi!.tau)) gtHi++;
      }
      // thk_i: walk down from thk_hi counting candidates
      let cnt = aThk, y = p.yThk, thk = -1;
      for (; ; y--) {
        res.stats.walkSteps++;
        if (keyPos(root[y]) < n) { if (++cnt === K) { thk = root[y]; break; } }
      }
      // tau_i: walk the breakpoints in (tau_lo, tau_hi] upward
      const tauLo = lo!.tau, tauHi = hi!.tau;
      let tau: number;
      if (tauLo === tauHi) tau = tauLo;
      else {
        let U = u0, nF = gtLoC - u0, sF = gtLoS - ge1S, cur = tauLo;
        let pE = p.yE0, pX = p.yX0;
        for (;;) {
          while (pE < p.yE1 && keyPos(root[pE]) >= n) { pE++; res.stats.walkSteps++; }
          while (pX < p.yX1 && keyPos(root[pX]) >= n) { pX++; res.stats.walkSteps++; }
          const tE = pE < p.yE1 ? keyVal(root[pE]) : Infinity;
          const vX = pX < p.yX1 ? keyVal(root[pX]) : Infinity;
          const tX = vX - 1;
          let tn = Math.min(tE, tX);
          const last = tn >= tauHi;
          if (last) tn = tauHi;
          const nFt = nF * tn, f = U + sF - nFt;
          const tol = 4 * Number.EPSILON * (U + Math.abs(sF) + Math.abs(nFt));
          if (f <= K + tol || last) {
            const t = nF > 0 ? (sF + U - K) / nF : cur;
            tau = t < cur ? cur : t > tn ? tn : t;
            break;
          }
          res.stats.walkSteps++;
          if (tE <= tX) { nF--; sF -= tE; pE++; }
          else { U--; nF++; sF += vX; pX++; }
          if (nF === 0) sF = 0;
          cur = tn;
        }
      }
      // |F_i|: the walk ranges counted directly, plus the middle (tau_hi, tau_lo + 1) in aggregate
      let nf = 0;
      const free = (yy: number): void => {
        if (keyPos(root[yy]) >= n) return;
        const v = keyVal(root[yy]);
        if (v > tau && v - tau < 1) nf++;
      };
      for (let yy = p.yE0; yy < p.yE1; yy++) free(yy);
      for (let yy = Math.max(p.yX0, p.yE1); yy < p.yX1; yy++) free(yy);
      if (p.yX0 > p.yE1) nf += gtHi - u0;
      res.tau[i] = tau; res.thk[i] = thk; res.count[i] = K; res.nfree[i] = nf;
      // row: Sel_{i0} and the new candidates, those with key >= thk_i
      const row: number[] = [];
      for (const j of selRow[b]) if (keyOf(u[j], j) >= thk) row.push(j);
      for (let j = nOf(i0); j < n; j++) if (keyOf(u[j], j) >= thk) row.push(j);
      res.rows[i] = Int32Array.from(row);
    }
  }
  return res;
}

export { keyOf, keyVal };
