// WGSL shared by the kernels of src/webgpu/kernels: workgroup reductions whose results are
// uniform (workgroupUniformLoad), so that loops and branches on them may contain barriers.
// Every kernel that includes these runs workgroups of WG = 64 threads, one dimension.

export const WG = 64;

/** -Infinity stand-in: WGSL has no infinity literal and some drivers flush it; exp(NEG - x) is 0. */
export const NEG = '-3.0e38';

/** Tree reductions over the 64 threads of a workgroup: sum (f32, u32) and max (f32). */
export const REDUCE = /* wgsl */ `
var<workgroup> red_f: array<f32, 64>;
var<workgroup> red_u: array<u32, 64>;
var<workgroup> res_f: f32;
var<workgroup> res_u: u32;

fn wg_sum_f(x: f32, lid: u32) -> f32 {
  red_f[lid] = x;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (lid < s) { red_f[lid] += red_f[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) { res_f = red_f[0]; }
  return workgroupUniformLoad(&res_f);
}

fn wg_max_f(x: f32, lid: u32) -> f32 {
  red_f[lid] = x;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (lid < s) { red_f[lid] = max(red_f[lid], red_f[lid + s]); }
    workgroupBarrier();
  }
  if (lid == 0u) { res_f = red_f[0]; }
  return workgroupUniformLoad(&res_f);
}

fn wg_sum_u(x: u32, lid: u32) -> u32 {
  red_u[lid] = x;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (lid < s) { red_u[lid] += red_u[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) { res_u = red_u[0]; }
  return workgroupUniformLoad(&res_u);
}
`;

/** Linear index of a thread in a 1D grid folded into 2D (runtime.ts groups1d). */
export const FLAT_INDEX = 'let idx = (wg.y * nwg.x + wg.x) * 64u + lid;';
export const FLAT_ARGS = '@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32';
