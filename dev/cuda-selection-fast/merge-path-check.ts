// The selection tree's merge in its two forms, ported to TypeScript: per element (each element
// binary-searches its rank in the sibling node, as the tree's first form did) and block-wise by merge path (src's
// sparsek_fs_merge_path). They must give the same keys and prefix sums, bit for bit, on rows with
// ties and pads.  node --import tsx dev/cuda-selection-fast/merge-path-check.ts
const MB = 1024;
function mergeElem(keys: BigUint64Array, ps: Float64Array, Tx: number, s: number) {
  const ok = new BigUint64Array(Tx), op = new Float64Array(Tx);
  for (let x = 0; x < Tx; x++) {
    const node = Math.floor(x / s), a = x - node * s, sb0 = (node ^ 1) * s, k = keys[x];
    let rb = 0;
    if (sb0 < Tx) {
      let lo = sb0, hi = Math.min(Tx, sb0 + s);
      if ((node & 1) === 0) { while (lo < hi) { const m = (lo + hi) >> 1; if (keys[m] < k) lo = m + 1; else hi = m; } }
      else { while (lo < hi) { const m = (lo + hi) >> 1; if (keys[m] <= k) lo = m + 1; else hi = m; } }
      rb = lo - sb0;
    }
    const out = (node & ~1) * s + a + rb;
    ok[out] = k; op[out] = ps[x] + (rb > 0 ? ps[sb0 + rb - 1] : 0);
  }
  return { ok, op };
}
function mergePath(keys: BigUint64Array, ps: Float64Array, Tx: number, s: number) {
  const ok = new BigUint64Array(Tx).fill(99n), op = new Float64Array(Tx).fill(NaN);
  for (let p0 = 0; p0 < Tx; p0 += MB) {
    const n0 = Math.floor(p0 / (2 * s)) * 2 * s, aN = Math.min(s, Tx - n0), bN = Math.max(0, Math.min(s, Tx - n0 - s));
    const A = (i: number) => keys[n0 + i], B = (j: number) => keys[n0 + s + j];
    const d0 = p0 - n0, d1 = Math.min(d0 + MB, aN + bN);
    const split = [d0, d1].map((d) => { let lo = Math.max(0, d - bN), hi = Math.min(d, aN); while (lo < hi) { const mid = (lo + hi) >> 1; if (A(mid) <= B(d - mid - 1)) lo = mid + 1; else hi = mid; } return lo; });
    const i0 = split[0], i1 = split[1], j0 = d0 - i0, j1 = d1 - i1, na = i1 - i0, nb = j1 - j0;
    for (let t = 0; t < na + nb; t++) {
      if (t < na) { const k = A(i0 + t); let lo = 0, hi = nb; while (lo < hi) { const m = (lo + hi) >> 1; if (B(j0 + m) < k) lo = m + 1; else hi = m; }
        const a = i0 + t, rb = j0 + lo; ok[n0 + a + rb] = k; op[n0 + a + rb] = ps[n0 + a] + (rb > 0 ? ps[n0 + s + rb - 1] : 0); }
      else { const k = B(j0 + t - na); let lo = 0, hi = na; while (lo < hi) { const m = (lo + hi) >> 1; if (A(i0 + m) <= k) lo = m + 1; else hi = m; }
        const bi = j0 + t - na, ra = i0 + lo; ok[n0 + bi + ra] = k; op[n0 + bi + ra] = ps[n0 + s + bi] + (ra > 0 ? ps[n0 + ra - 1] : 0); }
    }
  }
  return { ok, op };
}
let seed = 7; const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
let bad = 0, runs = 0;
for (const T of [1000, 2048, 3000, 5000, 65536 + 77]) for (const d of [0, 17, 63]) {
  const Tx = Math.ceil((T + d) / 64) * 64;
  // sorted nodes of s = 1024 to start: build by sorting chunks (keys: value bits << 32 | j, pads 0)
  let keys = new BigUint64Array(Tx), ps = new Float64Array(Tx);
  for (let x = 0; x < Tx; x++) { const j = x - d, real = j >= 0 && j < T; const v = real ? Math.fround(rnd() < 0.2 ? 0.5 : rnd() * 4 - 2) : 0;
    keys[x] = real ? (BigInt(Math.floor((v + 3) * 1e6)) << 32n) | BigInt(j) : 0n; ps[x] = v; }
  for (let s = 1; s < Math.min(1024, Tx); s *= 2) { const r = mergeElem(keys, ps, Tx, s); keys = r.ok; ps = r.op; }
  for (let s = 1024; s < Tx; s *= 2) {
    const a = mergeElem(keys, ps, Tx, s), b = mergePath(keys, ps, Tx, s); runs++;
    for (let x = 0; x < Tx; x++) if (a.ok[x] !== b.ok[x] || !Object.is(a.op[x], b.op[x])) { bad++; console.log(`T=${T} d=${d} s=${s} x=${x}`); break; }
    keys = a.ok; ps = a.op;
  }
}
console.log(`${runs} merges compared, ${bad} differ`);
