// The tensor-core kernels read only the selection rows of queries 64 r, compact: (BH, ceil(T / 64), K).
// The labs' selections write every row, (BH, T, K); this copies out the rows the kernels read.
import type { CudaRuntime, DeviceBlock } from '../../src/cuda/runtime.js';

export function compactRows(rt: CudaRuntime, sel: DeviceBlock, BH: number, T: number, K: number): DeviceBlock {
  const nb = Math.ceil(T / 64), rowBytes = K * 4;
  const out = rt.arena.take(Math.max(4, BH * nb * rowBytes));
  for (let bh = 0; bh < BH && K > 0; bh++) {
    for (let r = 0; r < nb; r++) {
      const src = sel.ptr + BigInt((bh * T + 64 * r) * rowBytes), dst = out.ptr + BigInt((bh * nb + r) * rowBytes);
      rt.cu('cuMemcpyDtoDAsync_v2', dst, src, rowBytes, rt.stream);
    }
  }
  return out;
}
