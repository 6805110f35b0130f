// Projections: out (N, OC) = inp (N, C) weight^T + bias, weight (OC, C) row-major as the CPU's
// matmulForward (src/cpu/kernels/matmul.ts). Two kernels: a 16 x 16 tiled one (each workgroup
// one output tile, stepping over C through workgroup memory: every inp and weight element is read
// from global memory N/16 + OC/16 times instead of OC + N), and for N = 1 (decoding) a
// matrix-vector one: a workgroup of 64 threads per output, reading the weight row coalesced and
// summing in a tree. fp32 accumulation. Not here: the backward (no training on WebGPU).

export const MM_TILE = 16;

export function matmulSource(o: { bias: boolean }): string {
  return /* wgsl */ `
struct P { N: u32, C: u32, OC: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // (N, OC)
@group(0) @binding(2) var<storage, read> inp: array<f32>;       // (N, C)
@group(0) @binding(3) var<storage, read> weight: array<f32>;    // (OC, C)
${o.bias ? '@group(0) @binding(4) var<storage, read> bias: array<f32>; // (OC)' : ''}
var<workgroup> ta: array<array<f32, 16>, 16>; // [row][c]
var<workgroup> tb: array<array<f32, 16>, 16>; // [output col][c]

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
  let row = wg.y * 16u + l.y;
  let col = wg.x * 16u + l.x;
  let wrow = wg.x * 16u + l.y; // the weight row this thread loads
  var acc = 0.0;
  for (var c0 = 0u; c0 < p.C; c0 += 16u) {
    let c = c0 + l.x;
    var a = 0.0;
    if (row < p.N && c < p.C) { a = inp[row * p.C + c]; }
    ta[l.y][l.x] = a;
    var b = 0.0;
    if (wrow < p.OC && c < p.C) { b = weight[wrow * p.C + c]; }
    tb[l.y][l.x] = b;
    workgroupBarrier();
    for (var k = 0u; k < 16u; k++) { acc += ta[l.y][k] * tb[l.x][k]; }
    workgroupBarrier();
  }
  if (row < p.N && col < p.OC) { out[row * p.OC + col] = acc${o.bias ? ' + bias[col]' : ''}; }
}
`;
}

export function gemvSource(o: { bias: boolean }): string {
  return /* wgsl */ `
struct P { N: u32, C: u32, OC: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // (OC)
@group(0) @binding(2) var<storage, read> inp: array<f32>;       // (C)
@group(0) @binding(3) var<storage, read> weight: array<f32>;    // (OC, C)
${o.bias ? '@group(0) @binding(4) var<storage, read> bias: array<f32>; // (OC)' : ''}
var<workgroup> part: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let o = wg.y * nwg.x + wg.x;
  if (o >= p.OC) { return; }
  var acc = 0.0;
  for (var c = lid; c < p.C; c += 64u) { acc += inp[c] * weight[o * p.C + c]; }
  part[lid] = acc;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (lid < s) { part[lid] += part[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) { out[o] = part[0]${o.bias ? ' + bias[o]' : ''}; }
}
`;
}
