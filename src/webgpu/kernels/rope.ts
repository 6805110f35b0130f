// Rotary embedding in place on rows of H heads (N, H*HS), Hugging Face's rotate_half convention
// as the CPU's ropeForward / ropePartialForward (src/cpu/kernels/rope.ts): the first R features
// of each head are rotated, feature i pairing with i + R/2; features R.. pass through (R = HS is
// full RoPE). The cos/sin tables (N, R/2) come from the CPU's ropeTables, so the angles are
// rounded exactly as in transformers, and no GPU sin/cos of large arguments is involved.
// One thread per (row, head, pair); in place is safe because each thread owns its pair.
import { FLAT_ARGS, FLAT_INDEX } from './common.js';

export function ropeSource(): string {
  return /* wgsl */ `
struct P { N: u32, H: u32, HS: u32, R: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> x: array<f32>; // (N, H*HS)
@group(0) @binding(2) var<storage, read> cosT: array<f32>;    // (N, R/2)
@group(0) @binding(3) var<storage, read> sinT: array<f32>;    // (N, R/2)

@compute @workgroup_size(64)
fn main(${FLAT_ARGS}) {
  ${FLAT_INDEX}
  let half = p.R / 2u;
  if (idx >= p.N * p.H * half) { return; }
  let i = idx % half;
  let nh = idx / half;
  let n = nh / p.H;
  let row = nh * p.HS;
  let c = cosT[n * half + i];
  let s = sinT[n * half + i];
  let x1 = x[row + i];
  let x2 = x[row + half + i];
  x[row + i] = x1 * c - x2 * s;
  x[row + half + i] = x2 * c + x1 * s;
}
`;
}
