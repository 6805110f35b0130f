// The WGSL kernels of src/webgpu/kernels against the CPU path (the verified reference) and, for
// the matmul and selection, against plain float64 references of this file and test/reference.
// Tolerances: fp32 kernels whose summation order differs from the CPU's float64 accumulation
// differ by about sqrt(n) ulp of the largest partial sum, so errors are bounded relative to the
// output's largest magnitude (as test/cuda does): 1e-5 for lengths up to a few hundred terms.
// Selections must match exactly (the scores are identical float32 inputs on both sides).
// Skipped visibly without a WebGPU device.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Ops } from '../../src/webgpu/ops.js';
import type { GpuRuntime, GpuTensor } from '../../src/webgpu/runtime.js';
import { rmsnormForward, layernormForward } from '../../src/cpu/kernels/norm.js';
import { ropePartialForward, ropeTables } from '../../src/cpu/kernels/rope.js';
import { swigluForward, geluForward, geluErfForward } from '../../src/cpu/kernels/activation.js';
import { selectCausal } from '../../src/cpu/kernels/selection.js';
import { sparsekAttention } from '../../src/cpu/kernels/attention.js';
import { attentionForward } from '../../src/cpu/kernels/baselines.js';
import { selectCausalRef } from '../reference/dense.js';
import { randArray, rng } from '../helpers.js';
import { maxAbs, testRuntime } from './gpu.js';

const { rt, skip } = await testRuntime();

function upload(r: GpuRuntime, a: Float32Array | Uint32Array): GpuTensor {
  const t = r.tensor(a.length, 'test input');
  r.write(t, a);
  return t;
}

/** |got - want| <= tol * max|want| everywhere. */
function assertRel(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  const bound = tol * Math.max(maxAbs(want), 1e-30);
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= bound)) assert.fail(`${what}[${i}]: got ${got[i]}, want ${want[i]} (err ${err.toExponential(2)}, bound ${bound.toExponential(2)})`);
  }
}

/** (T, H*HS) rows -> (1, H, T, HS) heads, the CPU attention layout. */
function toHeads(x: Float32Array, T: number, H: number, HS: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) for (let d = 0; d < HS; d++) out[(h * T + t) * HS + d] = x[(t * H + h) * HS + d];
  return out;
}

describe('WebGPU kernels', { skip }, () => {
  const r = rt!;
  let ops: Ops;
  const HS = 48;

  test('compile', async () => {
    ops = await Ops.create(r, HS);
  });

  // OC 70000: more outputs than workgroups per dimension (65535), so the grid folds into 2D.
  for (const [N, C, OC] of [[1, 48, 17], [7, 33, 100], [113, 64, 40], [1, 3, 70000]]) {
    // (SwiftShader runs ~40 us per workgroup: the 70000-workgroup case runs once, with its bias.)
    for (const bias of OC > 65535 ? [true] : [false, true]) {
      test(`matmul N ${N} C ${C} OC ${OC}${bias ? ' + bias' : ''} equals a float64 reference`, async () => {
        const inp = randArray(N * C, 1 + N, 1);
        const w = randArray(OC * C, 2 + C, 1);
        const b = randArray(OC, 3, 1);
        const out = r.tensor(N * OC, 'out');
        ops.matmul(out, upload(r, inp), upload(r, w), bias ? upload(r, b) : null, N, C, OC);
        const got = await r.read(out);
        const want = new Float64Array(N * OC);
        for (let n = 0; n < N; n++) {
          for (let o = 0; o < OC; o++) {
            let s = bias ? b[o] : 0;
            for (let c = 0; c < C; c++) s += inp[n * C + c] * w[o * C + c];
            want[n * OC + o] = s;
          }
        }
        // Terms of size ~1, C of them: fp32 error ~ sqrt(C) ulp of ~sqrt(C); relative to the max.
        assertRel(got, want, 1e-5, 'out');
      });
    }
  }

  for (const kind of ['rms', 'layer'] as const) {
    test(`${kind}norm equals the CPU's (N 7, C 100, mean offset 3)`, async () => {
      const N = 7, C = 100;
      const x = randArray(N * C, 5, 1, 3);
      const w = randArray(C, 6, 0.5, 1);
      const b = randArray(C, 7, 0.5);
      const out = r.tensor(N * C, 'out');
      ops.norm(out, upload(r, x), upload(r, w), kind === 'layer' ? upload(r, b) : null, N, C, 1e-5);
      const want = new Float32Array(N * C);
      if (kind === 'rms') rmsnormForward(want, new Float32Array(N), x, w, N, C, 1e-5);
      else layernormForward(want, new Float32Array(N), new Float32Array(N), x, w, b, N, C, 1e-5);
      assertRel(await r.read(out), want, 1e-5, 'out');
    });
  }

  for (const R of [HS, 16]) {
    test(`rope R ${R} of HS ${HS} at positions 1000.. equals the CPU's`, async () => {
      const T = 7, H = 3, pos0 = 1000;
      const x = randArray(T * H * HS, 8, 1);
      const tab = ropeTables(T, R, 10000, pos0);
      const t = upload(r, x);
      ops.rope(t, upload(r, tab.cos), upload(r, tab.sin), T, H, HS, R);
      const want = new Float32Array(x.length);
      // The CPU rotates (H, T, HS) heads; with the same tables the rows are the same rotations.
      ropePartialForward(want, toHeads(x, T, H, HS), 1, H, T, HS, R, 10000, pos0);
      assertRel(toHeads(await r.read(t), T, H, HS), want, 1e-6, 'x');
    });
  }

  test('swiglu and both GELUs equal the CPU\'s, including large |x|', async () => {
    const n = 1000;
    const a = randArray(n, 9, 12);
    const b = randArray(n, 10, 2);
    const out = r.tensor(n, 'out');
    const want = new Float32Array(n);
    ops.swiglu(out, upload(r, a), upload(r, b), n);
    swigluForward(want, a, b, n);
    assertRel(await r.read(out), want, 1e-6, 'swiglu');
    ops.gelu(out, upload(r, a), n, 'tanh');
    geluForward(want, a, n);
    assertRel(await r.read(out), want, 1e-6, 'gelu tanh');
    ops.gelu(out, upload(r, a), n, 'erf');
    geluErfForward(want, a, n);
    // A&S 7.1.26's erf is good to 1.5e-7 absolute: relative to max |x| = 12 that is ~1e-8.
    assertRel(await r.read(out), want, 1e-6, 'gelu erf');
  });

  // Scores of three kinds: distinct, heavily tied (8 levels), and all equal.
  // Selection costs O(T^2) per head: T 113 for two cases of each kind, T 40 for the edge cases
  // (K >= T, T < W, K = 0, K = W = 1).
  const scoreSets: [string, (T: number) => Float32Array, number[][]][] = [
    ['distinct', (T) => randArray(T, 11, 2), [[113, 5, 7], [113, 13, 0], [40, 200, 3], [40, 7, 150], [40, 0, 4], [40, 1, 1]]],
    ['tied', (T) => { const g = rng(12); return Float32Array.from({ length: T }, () => Math.floor(g() * 8) / 4 - 1); }, [[113, 5, 7], [40, 13, 0], [40, 1, 1]]],
    ['equal', (T) => new Float32Array(T).fill(0.5), [[40, 5, 7], [40, 13, 0]]],
  ];
  for (const [name, scores, cases] of scoreSets) {
    for (const [T, K, W] of cases) {
      test(`selection (${name} scores, T ${T}, K ${K}, W ${W}): Sel_i equals the CPU's and the reference's, gates within 1e-5`, async () => {
        const NKV = 2;
        const u = [scores(T), scores(T).map((x, j) => x * 0.5 + (j % 3))];
        const uflat = new Float32Array(T * NKV);
        for (let j = 0; j < T; j++) for (let h = 0; h < NKV; h++) uflat[j * NKV + h] = u[h][j];
        const sel = r.tensor(NKV * T * K, 'sel'), count = r.tensor(NKV * T, 'count'), tau = r.tensor(NKV * T, 'tau');
        ops.selection(sel, count, tau, upload(r, uflat), T, NKV, K, W, 0);
        const gotSel = new Int32Array((await r.read(sel)).buffer);
        const gotCount = new Uint32Array((await r.read(count)).buffer);
        const gotTau = await r.read(tau);
        for (let h = 0; h < NKV; h++) {
          const cpu = selectCausal(u[h], { k: K, window: W });
          const ref = selectCausalRef(u[h], K, W);
          for (let i = 0; i < T; i++) {
            const row = h * T + i;
            const got = Array.from(gotSel.subarray(row * K, row * K + gotCount[row]));
            assert.deepEqual(got, Array.from(cpu.selected[i]), `head ${h} query ${i}: Sel`);
            assert.deepEqual(got, ref.sel[i], `head ${h} query ${i}: Sel (reference)`);
            for (const j of got) {
              const gate = (t: number) => Math.min(1, Math.max(0, u[h][j] - t));
              const g = gate(gotTau[row]), want = gate(cpu.tau[i]);
              assert.ok(Math.abs(g - want) <= 1e-5, `head ${h} query ${i} key ${j}: gate ${g}, want ${want} (tau ${gotTau[row]} vs ${cpu.tau[i]})`);
            }
          }
        }
      });
    }
  }

  const shapes = [
    { T: 1, K: 3, W: 2 }, { T: 7, K: 3, W: 0 }, { T: 113, K: 13, W: 16 }, { T: 113, K: 200, W: 0 }, { T: 50, K: 5, W: 64 },
  ];
  for (const { T, K, W } of shapes) {
    test(`sparsek attention T ${T} K ${K} W ${W} (NH 4, NKV 2, HS ${HS}) equals the CPU's`, async () => {
      const NH = 4, NKV = 2;
      const q = randArray(T * NH * HS, 20, 1), k = randArray(T * NKV * HS, 21, 1), v = randArray(T * NKV * HS, 22, 1);
      const uflat = randArray(T * NKV, 23, 1.5);
      const eps = 0.05;
      const sel = r.tensor(NKV * T * K, 'sel'), count = r.tensor(NKV * T, 'count'), tau = r.tensor(NKV * T, 'tau');
      const ut = upload(r, uflat);
      ops.selection(sel, count, tau, ut, T, NKV, K, W, eps);
      const out = r.tensor(T * NH * HS, 'out');
      ops.attention(out, upload(r, q), upload(r, k), upload(r, v), { uflat: ut, sel, count, tau, K, eps }, T, NH, NKV, HS, W);
      const u = new Float32Array(NKV * T);
      for (let t = 0; t < T; t++) for (let h = 0; h < NKV; h++) u[h * T + t] = uflat[t * NKV + h] + eps * t;
      const want = sparsekAttention({ q: toHeads(q, T, NH, HS), k: toHeads(k, T, NKV, HS), v: toHeads(v, T, NKV, HS), u }, { B: 1, T, NH, NKV, HS }, { k: K, window: W }).out;
      assertRel(toHeads(await r.read(out), T, NH, HS), want, 1e-5, 'out');
    });
  }

  for (const [kind, W] of [['window', 5], ['dense', 0]] as const) {
    test(`${kind} attention T 113 equals the CPU's`, async () => {
      const T = 113, NH = 6, NKV = 3;
      const q = randArray(T * NH * HS, 30, 2), k = randArray(T * NKV * HS, 31, 2), v = randArray(T * NKV * HS, 32, 1);
      const out = r.tensor(T * NH * HS, 'out');
      ops.attention(out, upload(r, q), upload(r, k), upload(r, v), null, T, NH, NKV, HS, kind === 'dense' ? T : W);
      const x = { q: toHeads(q, T, NH, HS), k: toHeads(k, T, NKV, HS), v: toHeads(v, T, NKV, HS) };
      const shape = { B: 1, T, NH, NKV, HS };
      const want = kind === 'dense' ? attentionForward('dense', x, shape, {}).out : attentionForward('window', x, shape, { window: W }).out;
      assertRel(toHeads(await r.read(out), T, NH, HS), want, 1e-5, 'out');
    });
  }
});
