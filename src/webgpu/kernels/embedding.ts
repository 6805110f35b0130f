// Token embedding: out (N, C) = wte[ids[n]], plus wpe[pos0 + n] for learned positions (GPT-2),
// as the CPU's embeddingForward (+ addInPlace). Ids are checked on the host before upload. One
// thread per element.
import { FLAT_ARGS, FLAT_INDEX } from './common.js';

export function embeddingSource(o: { learned: boolean }): string {
  return /* wgsl */ `
struct P { N: u32, C: u32, pos0: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // (N, C)
@group(0) @binding(2) var<storage, read> ids: array<u32>;       // (N)
@group(0) @binding(3) var<storage, read> wte: array<f32>;       // (V, C)
${o.learned ? '@group(0) @binding(4) var<storage, read> wpe: array<f32>; // (context, C)' : ''}

@compute @workgroup_size(64)
fn main(${FLAT_ARGS}) {
  ${FLAT_INDEX}
  if (idx >= p.N * p.C) { return; }
  let n = idx / p.C;
  let c = idx % p.C;
  out[idx] = wte[ids[n] * p.C + c]${o.learned ? ' + wpe[(p.pos0 + n) * p.C + c]' : ''};
}
`;
}
