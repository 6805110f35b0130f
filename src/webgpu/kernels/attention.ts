// Attention of one query over an explicit key list (SPEC.md section 4), one workgroup of 64
// threads per (query, query head):
//
//   s_j = scale q . k_j,   a_j = softmax_j(s_j),   o = sum_j a_j g_j v_j
//
// The list is the query's window (gate 1) followed by its selected keys (gate
// clip(u_j - tau, 0, 1)), in the order of the CPU's sparsekPattern. Keys go through in chunks of
// 64: each thread scores one key of the chunk into workgroup memory, then every thread updates the
// running max and denominator (online softmax) and accumulates its own features (d = lid,
// lid + 64, ...) over the chunk. Work O(keys * HS) per query; q . k is computed once per key.
//
// Three key sources, one per kernel variant:
//   'window'  full forward, window (dense: W = T) over k, v (T, NKV*HS)
//   'sparsek' full forward, window then sel/count/tau from selection.ts
//   'decode'  one query over the decoder's cache (NKV, S, HS), S = ring + K slots: ring slots
//             [0, nRing) with gate 1, selected slots ring + [0, nSel) with gates (NKV, K)
// Grouped-query attention: query head hq reads KV head hq / (NH / NKV).
import { NEG } from './common.js';

export type AttentionVariant = 'window' | 'sparsek' | 'decode';

export function attentionSource(o: { HS: number; variant: AttentionVariant }): string {
  const { HS, variant } = o;
  const ND = Math.ceil(HS / 64);
  const decode = variant === 'decode';
  const bindings = decode
    ? `@group(0) @binding(2) var<storage, read> q: array<f32>;     // (NH*HS)
@group(0) @binding(3) var<storage, read> kc: array<f32>;    // (NKV, S, HS)
@group(0) @binding(4) var<storage, read> vc: array<f32>;    // (NKV, S, HS)
@group(0) @binding(5) var<storage, read> gates: array<f32>; // (NKV, K)`
    : `@group(0) @binding(2) var<storage, read> q: array<f32>; // (T, NH*HS)
@group(0) @binding(3) var<storage, read> kc: array<f32>; // (T, NKV*HS)
@group(0) @binding(4) var<storage, read> vc: array<f32>; // (T, NKV*HS)
${variant === 'sparsek' ? `@group(0) @binding(5) var<storage, read> uflat: array<f32>; // (T, NKV)
@group(0) @binding(6) var<storage, read> sel: array<i32>;   // (NKV, T, K)
@group(0) @binding(7) var<storage, read> count: array<u32>; // (NKV, T)
@group(0) @binding(8) var<storage, read> tau: array<f32>;   // (NKV, T)` : ''}`;
  // Per variant: the query row, the number of window keys and selected keys, and key c's
  // offset into kc/vc and gate.
  const setup = decode
    ? `let i = 0u;
  let qoff = hq * HS;
  let n_win = p.nRing;
  let n_sel = p.nSel;`
    : `let i = wg.x;
  let qoff = (i * p.NH + hq) * HS;
  let n_win = min(p.W, i + 1u);
  ${variant === 'sparsek' ? `if (lid == 0u) { sh_n = count[h * p.T + i]; sh_tau = tau[h * p.T + i]; }
  let n_sel = workgroupUniformLoad(&sh_n);
  let tau_i = workgroupUniformLoad(&sh_tau);` : 'let n_sel = 0u;'}`;
  const keyOf = decode
    ? `if (c < n_win) { koff = (h * p.S + c) * HS; g = 1.0; }
      else { let s = c - n_win; koff = (h * p.S + p.ring + s) * HS; g = gates[h * p.K + s]; }`
    : `var j = i + 1u - n_win + c;
      g = 1.0;
      ${variant === 'sparsek' ? `if (c >= n_win) {
        j = u32(sel[(h * p.T + i) * p.K + c - n_win]);
        g = clamp(uflat[j * p.NKV + h] + p.eps * f32(j) - tau_i, 0.0, 1.0);
      }` : ''}
      koff = (j * p.NKV + h) * HS;`;
  return /* wgsl */ `
const HS = ${HS}u;
const ND = ${ND}u;
struct P { T: u32, NH: u32, NKV: u32, K: u32, W: u32, eps: f32, scale: f32, nRing: u32, nSel: u32, S: u32, ring: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // like q
${bindings}
var<workgroup> sq: array<f32, ${HS}>;
var<workgroup> ss: array<f32, 64>;  // scores of the chunk
var<workgroup> sp: array<f32, 64>;  // exp(s - max)
var<workgroup> sg: array<f32, 64>;  // gates
var<workgroup> so: array<u32, 64>;  // offsets of the keys' rows
var<workgroup> sh_n: u32;
var<workgroup> sh_tau: f32;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let hq = wg.y;
  let h = hq / (p.NH / p.NKV);
  ${setup}
  let n = n_win + n_sel;
  for (var d = lid; d < HS; d += 64u) { sq[d] = q[qoff + d]; }
  workgroupBarrier();
  var m = ${NEG};
  var l = 0.0;
  var acc: array<f32, ND>;
  for (var c0 = 0u; c0 < n; c0 += 64u) {
    let c = c0 + lid;
    var s = ${NEG};
    var g = 0.0;
    var koff = 0u;
    if (c < n) {
      ${keyOf}
      var dot = 0.0;
      for (var d = 0u; d < HS; d++) { dot += sq[d] * kc[koff + d]; }
      s = dot * p.scale;
    }
    ss[lid] = s;
    sg[lid] = g;
    so[lid] = koff;
    workgroupBarrier();
    var cm = ${NEG};
    for (var t = 0u; t < 64u; t++) { cm = max(cm, ss[t]); }
    let mn = max(m, cm);
    let corr = exp(m - mn);
    sp[lid] = select(0.0, exp(s - mn), c < n);
    workgroupBarrier();
    var ps = 0.0;
    for (var t = 0u; t < 64u; t++) { ps += sp[t]; }
    l = l * corr + ps;
    for (var r = 0u; r < ND; r++) {
      let d = lid + 64u * r;
      if (d < HS) {
        var a = acc[r] * corr;
        for (var t = 0u; t < 64u; t++) { a += sp[t] * sg[t] * vc[so[t] + d]; }
        acc[r] = a;
      }
    }
    m = mn;
    workgroupBarrier();
  }
  for (var r = 0u; r < ND; r++) {
    let d = lid + 64u * r;
    if (d < HS) { out[qoff + d] = select(0.0, acc[r] / l, n > 0u); }
  }
}
`;
}
