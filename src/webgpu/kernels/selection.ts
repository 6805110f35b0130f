// Causal SparseK selection for a whole sequence (SPEC.md section 3), one workgroup of 64 threads
// per (query i, KV head h), each query on its own: the CPU's CausalSelector walks the queries in
// order, which does not parallelise. For query i the candidates are j in [0, nc), nc = i - W + 1
// (W = 0: i + 1), and k = min(K, nc). Scores u_j = uflat[j, h] + eps j (SPEC section 2).
//
//   pass 1  theta: the k-th largest score (with multiplicity), built bit by bit on the scores'
//           order-preserving u32 keys: 32 counting reductions over the candidates;
//   pass 2  ties at theta go to the most recent (SPEC: (u, j) lexicographic): the position p0
//           such that exactly k - |{u > theta}| candidates with u = theta lie at j >= p0
//           (a binary search over positions); Sel_i = {u > theta} + {u = theta, j >= p0};
//   pass 3  tau: f(t) = sum_j clip(u_j - t, 0, 1) is non-increasing, f(theta - 2) >= k and
//           f(max u) = 0: bisection down to adjacent floats, then SPEC's closed form
//           tau = (sum_F u + |U| - k) / |F| on the sets at the bisection's lower end (exact
//           whatever side of a breakpoint it lands on: a member at a breakpoint contributes the
//           same to either set). With F empty f is flat at k and any t there gives the same
//           gates, so the lower end is kept;
//   pass 4  Sel_i written in ascending order (a prefix sum over each chunk of 64 candidates).
// Work per query is O(nc) per reduction, about 100 reductions: O(T^2) per head in all, against
// the CPU's O(T log T). Fine for the lengths a full forward sees on WebGPU (generation uses the
// streaming selector of decode.ts); a block-parallel form is future work (docs/webgpu.md).
// Outputs: sel (NKV, T, K) i32 ascending in the first count entries, count (NKV, T),
// tau (NKV, T) with -3e38 for "no threshold" (k = nc: every gate is 1).
import { NEG, REDUCE } from './common.js';

export function selectionSource(): string {
  return /* wgsl */ `
struct P { T: u32, NKV: u32, K: u32, W: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> sel: array<i32>;   // (NKV, T, K)
@group(0) @binding(2) var<storage, read_write> count: array<u32>; // (NKV, T)
@group(0) @binding(3) var<storage, read_write> tau: array<f32>;   // (NKV, T)
@group(0) @binding(4) var<storage, read> uflat: array<f32>;       // (T, NKV)
${REDUCE}
var<workgroup> scan: array<u32, 64>;

fn score(j: u32, h: u32) -> f32 {
  let u = uflat[j * p.NKV + h] + p.eps * f32(j);
  return select(u, 0.0, u == 0.0); // -0 -> +0: equal scores must have equal keys
}

// Order-preserving map of f32 to u32: a < b  <=>  key(a) < key(b).
fn key(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn unkey(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = wg.x;
  let h = wg.y;
  let row = h * p.T + i;
  let base = row * p.K;
  var nc = i + 1u;
  if (p.W > 0u) { nc = select(0u, i + 1u - p.W, i + 1u >= p.W); }
  let k = min(p.K, nc);
  if (k == nc || k == 0u) {
    for (var c = lid; c < k; c += 64u) { sel[base + c] = i32(c); }
    if (lid == 0u) { count[row] = k; tau[row] = ${NEG}; }
    return;
  }

  // 1. x = key of the k-th largest score
  var x = 0u;
  for (var b = 0u; b < 32u; b++) {
    let cand = x | (0x80000000u >> b);
    var n = 0u;
    for (var j = lid; j < nc; j += 64u) { n += select(0u, 1u, key(score(j, h)) >= cand); }
    if (wg_sum_u(n, lid) >= k) { x = cand; }
  }

  // 2. ties at x: the m most recent
  var n_gt = 0u;
  for (var j = lid; j < nc; j += 64u) { n_gt += select(0u, 1u, key(score(j, h)) > x); }
  let m = k - wg_sum_u(n_gt, lid);
  var lo = 0u;
  var hi = nc - 1u;
  while (lo < hi) {
    let mid = (lo + hi + 1u) / 2u;
    var n = 0u;
    for (var j = mid + lid; j < nc; j += 64u) { n += select(0u, 1u, key(score(j, h)) == x); }
    if (wg_sum_u(n, lid) >= m) { lo = mid; } else { hi = mid - 1u; }
  }
  let p0 = lo;

  // 3. tau
  var umax = ${NEG};
  for (var j = lid; j < nc; j += 64u) { umax = max(umax, score(j, h)); }
  var t_lo = unkey(x) - 2.0;
  var t_hi = wg_max_f(umax, lid);
  for (var it = 0u; it < 64u; it++) {
    let mid = 0.5 * (t_lo + t_hi);
    if (mid <= t_lo || mid >= t_hi) { break; }
    var f = 0.0;
    for (var j = lid; j < nc; j += 64u) { f += clamp(score(j, h) - mid, 0.0, 1.0); }
    if (wg_sum_f(f, lid) >= f32(k)) { t_lo = mid; } else { t_hi = mid; }
  }
  var su = 0.0;
  var nu = 0u;
  var nf = 0u;
  for (var j = lid; j < nc; j += 64u) {
    let u = score(j, h);
    let d = u - t_lo;
    if (d >= 1.0) { nu += 1u; } else if (d > 0.0) { nf += 1u; su += u; }
  }
  let sum_f = wg_sum_f(su, lid);
  let n_u = wg_sum_u(nu, lid);
  let n_f = wg_sum_u(nf, lid);
  var t = t_lo;
  if (n_f > 0u) { t = (sum_f + f32(n_u) - f32(k)) / f32(n_f); }

  // 4. Sel_i, ascending
  var written = 0u;
  for (var c0 = 0u; c0 < nc; c0 += 64u) {
    let j = c0 + lid;
    var flag = 0u;
    if (j < nc) {
      let kj = key(score(j, h));
      flag = select(0u, 1u, kj > x || (kj == x && j >= p0));
    }
    scan[lid] = flag;
    workgroupBarrier();
    for (var s = 1u; s < 64u; s <<= 1u) {
      var v = scan[lid];
      if (lid >= s) { v += scan[lid - s]; }
      workgroupBarrier();
      scan[lid] = v;
      workgroupBarrier();
    }
    if (flag == 1u) { sel[base + written + scan[lid] - 1u] = i32(j); }
    if (lid == 63u) { res_u = scan[63]; }
    written += workgroupUniformLoad(&res_u);
  }
  if (lid == 0u) { count[row] = k; tau[row] = t; }
}
`;
}
