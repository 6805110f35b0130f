// CPU consistency check of kernel.ts's index formulas (no GPU): the cp.async chunk order, the
// descriptor offsets per k-step as the PTX ISA's no-swizzle canonical layouts describe them, and the
// S accumulator -> P register fragment packing. It checks the formulas against each other and against
// the documented layouts, not the hardware: probe.ts does that on the GPU.
//
//   node --import tsx dev/cuda-attention-wgmma/layout-check.ts

let bad = 0;
const fail = (msg: string): void => { if (bad++ < 10) console.log(`MISMATCH ${msg}`); };

for (const HS of [64, 128]) {
  const CPR = HS / 8;
  // 1. cp.async: chunk x holds row r, columns 8c .. 8c + 7, at byte 16 x
  const byteOf = new Map<string, number>(); // "r,col" -> byte
  for (let x = 0; x < 64 * CPR; x++) {
    const r = (x & 7) + Math.floor((x >> 3) / CPR) * 8, c = (x >> 3) % CPR;
    for (let e = 0; e < 8; e++) byteOf.set(`${r},${c * 8 + e}`, 16 * x + 2 * e);
  }
  if (byteOf.size !== 64 * HS) fail(`HS ${HS}: chunks cover ${byteOf.size} of ${64 * HS} elements`);
  // 2. K-major operand (Q as A, K as B): core matrix (8 rows x 16 bytes, row-contiguous) at
  //    start + (row / 8) * stride + (kcol / 8) * lead, element (row % 8) * 16 + (kcol % 8) * 2
  const lead = 128, stride = HS * 16;
  for (let ks = 0; ks < HS / 16; ks++) {
    const start = ks * 256;
    for (let row = 0; row < 64; row++) for (let kc = 0; kc < 16; kc++) {
      const addr = start + Math.floor(row / 8) * stride + Math.floor(kc / 8) * lead + (row % 8) * 16 + (kc % 8) * 2;
      if (addr !== byteOf.get(`${row},${ks * 16 + kc}`)) fail(`HS ${HS} K-major ks ${ks} (${row}, ${kc})`);
    }
  }
  // 3. MN-major B (V, key-major in memory): core matrix = 8 keys (K dim) x 16 bytes along hs (N dim);
  //    start + (key / 8) * (K-dim offset) + (hs / 8) * (N-dim offset), element (key % 8) * 16 + (hs % 8) * 2
  for (let kk = 0; kk < 4; kk++) {
    const start = kk * 2 * HS * 16;
    for (let key = 0; key < 16; key++) for (let d = 0; d < HS; d++) {
      const addr = start + Math.floor(key / 8) * (HS * 16) + Math.floor(d / 8) * 128 + (key % 8) * 16 + (d % 8) * 2;
      if (addr !== byteOf.get(`${kk * 16 + key},${d}`)) fail(`HS ${HS} MN-major kk ${kk} (${key}, ${d})`);
    }
  }
}

// 4. S accumulator (m64n64, d[i] at row 16w + g + 8 ((i >> 1) & 1), col 8 (i >> 2) + 2t + (i & 1)) packed
//    into the m64nNk16 A fragment of k-step kk: a0 (g, 2t..), a1 (g + 8, 2t..), a2 (g, 2t + 8..), a3 (g + 8, 2t + 8..)
for (let lane = 0; lane < 32; lane++) {
  const g = lane >> 2, t = lane & 3;
  const acc = (i: number): [number, number] => [g + 8 * ((i >> 1) & 1), 8 * (i >> 2) + 2 * t + (i & 1)];
  for (let kk = 0; kk < 4; kk++) {
    const want: [number, number][] = [[g, 16 * kk + 2 * t], [g + 8, 16 * kk + 2 * t], [g, 16 * kk + 2 * t + 8], [g + 8, 16 * kk + 2 * t + 8]];
    for (let r = 0; r < 4; r++) {
      // kernel: pa[n >> 1][(n & 1) * 2 + 0] = (s[4n], s[4n + 1]), pa[n >> 1][(n & 1) * 2 + 1] = (s[4n + 2], s[4n + 3])
      const n = 2 * kk + (r >> 1), lo = 4 * n + 2 * (r & 1);
      const [r0, c0] = acc(lo), [r1, c1] = acc(lo + 1);
      if (r0 !== want[r][0] || c0 !== want[r][1] || r1 !== want[r][0] || c1 !== want[r][1] + 1) fail(`lane ${lane} kk ${kk} a${r}`);
    }
  }
}

console.log(bad === 0 ? 'layout-check: chunk order, K-major and MN-major descriptor offsets, P fragment packing agree' : `layout-check: ${bad} mismatches`);
if (bad > 0) process.exitCode = 1;
