// Small data movement: out += a (the residual adds), and moving rows within one buffer (the
// decoder's K/V cache: a candidate's K and V go from its window slot to a selected slot).
// WebGPU's copyBufferToBuffer cannot copy within one buffer, hence the kernel.
import { FLAT_ARGS, FLAT_INDEX } from './common.js';

export function addSource(): string {
  return /* wgsl */ `
struct P { n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // (n)
@group(0) @binding(2) var<storage, read> a: array<f32>;         // (n)

@compute @workgroup_size(64)
fn main(${FLAT_ARGS}) {
  ${FLAT_INDEX}
  if (idx < p.n) { out[idx] += a[idx]; }
}
`;
}

/** kc[dst .. dst+n) = kc[src .. src+n) and the same in vc; the ranges do not overlap. */
export function kvMoveSource(): string {
  return /* wgsl */ `
struct P { dst: u32, src: u32, n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> kc: array<f32>;
@group(0) @binding(2) var<storage, read_write> vc: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32) {
  for (var d = lid; d < p.n; d += 64u) {
    kc[p.dst + d] = kc[p.src + d];
    vc[p.dst + d] = vc[p.src + d];
  }
}
`;
}
