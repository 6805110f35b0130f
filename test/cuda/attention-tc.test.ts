// The tensor-core SparseK kernels (src/cuda/kernels/attention-tc*.ts) as CudaBackend runs them under
// precision 'bf16': forward and backward through be.attention, against the CPU layer (the
// reference) on inputs already rounded to bf16, so the only extra error is the kernels' own bf16
// rounding of P·g before the value product and of dS and P·g in the backward (unit roundoff
// U = 2^-8), with fp32 accumulation. Bounds: 3U of the largest reference entry for out, 4U for the
// gradients, and the rms error below U of the reference's rms. Skipped visibly without a CUDA device.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cudaAvailability } from '../../src/cuda/runtime.js';
import { CudaBackend, fromBf16, toBf16 } from '../../src/cuda/backend.js';
import type { CudaAttentionLayer } from '../../src/cuda/backend.js';
import { makeAttention } from '../../src/cpu/attention-layer.js';
import type { AttentionShape } from '../../src/core/check.js';
import { Rng } from '../../src/core/random.js';

const avail = cudaAvailability();
const skip = avail.available ? false : `no CUDA device: ${avail.reason}`;
const U = 2 ** -8;

/** Uniform values in (-scale, scale), rounded to bf16 (so the GPU's bf16 copies are exact). */
function bf16Rand(n: number, seed: number, scale = 1): Float32Array {
  const rng = new Rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (rng.uniform() * 2 - 1) * scale;
  return fromBf16(toBf16(a));
}

/** got against want: max error within maxRel of max |want| plus abs, rms error within U of rms want plus abs. */
function check(name: string, got: Float32Array, want: Float32Array, maxRel: number, abs = 0): void {
  let maxRef = 0, worst = 0, at = 0, se = 0, sr = 0;
  for (let i = 0; i < want.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(want[i]));
    const e = Math.abs(got[i] - want[i]);
    if (!(e <= worst)) { worst = e; at = i; }
    se += e * e;
    sr += want[i] * want[i];
  }
  assert.ok(worst <= maxRel * maxRef + abs + 1e-30, `${name}[${at}]: got ${got[at]}, want ${want[at]}: max error ${(worst / maxRef).toExponential(2)} of max |ref|, bound ${maxRel.toExponential(2)}`);
  assert.ok(Math.sqrt(se) <= U * Math.sqrt(sr) + abs * Math.sqrt(want.length) + 1e-30, `${name}: rms error ${(Math.sqrt(se / sr)).toExponential(2)} of rms ref, bound ${U.toExponential(2)}`);
}

interface Case { name: string; shape: AttentionShape; K: number; W: number; tied?: boolean; kind?: 'sparsek' | 'dense' | 'window' }
const cases: Case[] = [
  { name: 'GQA', shape: { B: 1, T: 300, NH: 4, NKV: 2, HS: 64 }, K: 40, W: 17 },
  // groups of 4: the forward's blocks take 2 of a group's heads (GH 2), so 2 blocks per KV head
  { name: 'GQA, groups of 4', shape: { B: 2, T: 270, NH: 8, NKV: 2, HS: 64 }, K: 30, W: 40 },
  { name: 'GQA, HS = 128', shape: { B: 1, T: 260, NH: 4, NKV: 1, HS: 128 }, K: 50, W: 33 },
  { name: 'HS = 128, B = 2', shape: { B: 2, T: 200, NH: 2, NKV: 2, HS: 128 }, K: 33, W: 64 },
  { name: 'W = 0', shape: { B: 1, T: 257, NH: 2, NKV: 1, HS: 64 }, K: 50, W: 0 },
  { name: 'K >= T', shape: { B: 1, T: 90, NH: 1, NKV: 1, HS: 64 }, K: 100, W: 8 },
  { name: 'tied scores', shape: { B: 1, T: 230, NH: 2, NKV: 2, HS: 64 }, K: 20, W: 10, tied: true },
  { name: 'T = 1', shape: { B: 1, T: 1, NH: 1, NKV: 1, HS: 64 }, K: 5, W: 3 },
  // Hopper runs the window pairs on the wgmma kernel (attention-wg-backward.ts) at HS 128, and at HS 64
  // from T = 8192: a partial last key block, W = 2 (mod 64), two heads of a group
  { name: 'T >= 8192', shape: { B: 1, T: 8230, NH: 2, NKV: 1, HS: 64 }, K: 48, W: 130 },
  { name: 'HS = 128, T >= 8192', shape: { B: 1, T: 8230, NH: 2, NKV: 1, HS: 128 }, K: 48, W: 130 },
  // Hopper runs the selected pairs on wgmma (attention-wg-backward.ts) at every T: 256 queries a block at
  // HS 64. Here Sel spans three key tiles, the new candidates up to four, with a partial last block.
  { name: 'selected pairs over many tiles', shape: { B: 1, T: 1300, NH: 4, NKV: 1, HS: 64 }, K: 150, W: 70 },
  // dense and window run the same kernels as SparseK with nothing selected
  { name: 'dense', shape: { B: 2, T: 300, NH: 4, NKV: 2, HS: 64 }, K: 0, W: 0, kind: 'dense' },
  { name: 'window', shape: { B: 1, T: 333, NH: 2, NKV: 2, HS: 128 }, K: 0, W: 70, kind: 'window' },
];

describe('tensor-core SparseK attention (precision bf16) against the CPU layer', { skip }, () => {
  // q, k, v, out and dout either as bf16 buffers (the layer's io, read and written in place, as the
  // model hands them over) or as float32 ones (copied to bf16 by the layer; out written in float32).
  for (const c of cases) for (const io of ['bf16', 'f32'] as const) {
    test(`${c.name}: B=${c.shape.B} T=${c.shape.T} NH=${c.shape.NH} NKV=${c.shape.NKV} HS=${c.shape.HS} K=${c.K} W=${c.W}, ${io} q, k, v, out, dout`, () => {
      const { B, T, NH, NKV, HS } = c.shape;
      const nq = B * NH * T * HS, nkv = B * NKV * T * HS, nu = B * NKV * T;
      const q = bf16Rand(nq, 1), k = bf16Rand(nkv, 2), v = bf16Rand(nkv, 3), dout = bf16Rand(nq, 5);
      const u = bf16Rand(nu, 4, 2);
      if (c.tied) for (let i = 0; i < nu; i++) u[i] = Math.round(u[i] * 2) / 2; // many exact ties
      const cfg = { attention: c.kind ?? 'sparsek', k: c.K, window: c.W, hashBuckets: 2 };
      const scored = cfg.attention === 'sparsek';
      const cpu = makeAttention(cfg, c.shape);
      const want = { out: new Float32Array(nq), dq: new Float32Array(nq), dk: new Float32Array(nkv), dv: new Float32Array(nkv), du: new Float32Array(nu) };
      cpu.forward(want.out, q, k, v, scored ? u : null);
      cpu.backward(want.dq, want.dk, want.dv, scored ? want.du : null, dout);

      const be = new CudaBackend(undefined, { precision: 'bf16' });
      const layer = be.attention(cfg, c.shape) as CudaAttentionLayer;
      assert.equal(layer.kernels, 'tensor-core');
      assert.equal(layer.io, 'act');
      const storage = io === 'bf16' ? 'act' : 'f32';
      const up = (a: Float32Array, s: 'act' | 'f32' = storage) => {
        const b = be.alloc(a.length, s);
        be.upload(b, a);
        return b;
      };
      const [dOut, dQ, dK, dV, dU] = [be.alloc(nq, storage), be.alloc(nq), be.alloc(nkv), be.alloc(nkv), be.alloc(nu)];
      assert.equal(dOut.dtype, io);
      layer.forward(dOut, up(q), up(k), up(v), scored ? up(u, 'f32') : null);
      // The backward overwrites its outputs (7s before it), dq too, which at HS 128 the window kernel
      // stores tile by tile (OWNQ) instead of prep zeroing it; twice, so that the second call's flags
      // cannot be mistaken for the first's.
      const dOutGrad = up(dout);
      for (let call = 0; call < 2; call++) {
        for (const g of [dQ, dK, dV, dU]) be.fill(g, 7);
        layer.backward(dQ, dK, dV, scored ? dU : null, dOutGrad);
      }
      check('out', be.download(dOut), want.out, 3 * U);
      // dq and dk are sums of ds = a (do.v - D) terms, D = do.o: where they cancel exactly in float64
      // (T = 1: o = v), fp32 sums in two orders leave about eps32 HS |do| |v| (inputs within 1), times
      // scale |k| or |q|; 8 of those is the floor (T = 1 measured 1.5e-8 on an H100)
      const cancel = (8 * 2 ** -23 * HS) / Math.sqrt(HS);
      check('dq', be.download(dQ), want.dq, 4 * U, cancel);
      check('dk', be.download(dK), want.dk, 4 * U, cancel);
      check('dv', be.download(dV), want.dv, 4 * U);
      if (scored) {
        check('du', be.download(dU), want.du, 4 * U);
        // The forward wrote only the blocks' first selection rows (all the kernels read); the
        // rest come on demand, and every query's row must equal the CPU's.
        const got = layer.selections(), ref = cpu.selections();
        assert.ok(got !== null && ref !== null);
        assert.equal(got.length, ref.length);
        for (let r = 0; r < ref.length; r++) {
          for (let i = 0; i < T; i++) assert.deepEqual([...got[r].rows[i]], [...ref[r].rows[i]], `row ${r} query ${i}: selected keys`);
        }
      } else {
        assert.equal(layer.selections(), null, 'no selection to report for dense and window');
      }
      layer.dispose();
    });
  }

  test('fp32 precision and other head sizes keep the fp32 kernels', () => {
    const shape = { B: 1, T: 16, NH: 1, NKV: 1, HS: 64 };
    const fp32 = new CudaBackend(undefined, { precision: 'fp32' }).attention({ attention: 'sparsek', k: 4, window: 4, hashBuckets: 2 }, shape);
    assert.equal((fp32 as CudaAttentionLayer).kernels, 'fp32');
    const bf = new CudaBackend(undefined, { precision: 'bf16' });
    assert.equal((bf.attention({ attention: 'sparsek', k: 4, window: 4, hashBuckets: 2 }, { ...shape, HS: 48 }) as CudaAttentionLayer).kernels, 'fp32');
    assert.equal((bf.attention({ attention: 'window', k: 0, window: 4, hashBuckets: 2 }, { ...shape, HS: 48 }) as CudaAttentionLayer).kernels, 'fp32');
    assert.equal((bf.attention({ attention: 'window', k: 0, window: 4, hashBuckets: 2 }, shape) as CudaAttentionLayer).kernels, 'tensor-core');
  });
});
