// Tests of src/cpu/kernels/rope.ts. Oracles: the Hugging Face formula written literally in float64
// (q * cat(cos, cos) + rotate_half(q) * cat(sin, sin), rotate_half(x) = cat(-x2, x1), inv_freq[i] =
// theta^(-2i/HS)); the tables against float64 cos/sin with the error bound of float32 angles; the
// backward as the adjoint of the forward (<R x, y> = <x, R^T y>, exact for a linear map, so no
// finite differences are needed) and against central finite differences of the float64 formula;
// properties: pair norms preserved, q_m . k_n depends only on m - n, decoding one position at
// posOffset = p equals row p of the full sequence.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ropeBackward, ropeForward, ropePartialBackward, ropePartialForward, ropeTables } from '../../src/cpu/kernels/rope.js';
import { rng, randArray, assertClose } from '../helpers.js';

/** transformers' apply_rotary_pos_emb for one (B, NH, T, HS) tensor, all in float64. */
function refRope(x: ArrayLike<number>, B: number, NH: number, T: number, HS: number, theta: number, posOffset: number): Float64Array {
  const half = HS / 2;
  const out = new Float64Array(B * NH * T * HS);
  for (let bh = 0; bh < B * NH; bh++) {
    for (let t = 0; t < T; t++) {
      const row = (bh * T + t) * HS;
      const pos = posOffset + t;
      const cosFull: number[] = [], sinFull: number[] = [], rotHalf: number[] = [];
      for (let d = 0; d < HS; d++) {
        const i = d % half; // emb = cat(freqs, freqs)
        const angle = pos * Math.pow(theta, -(2 * i) / HS);
        cosFull.push(Math.cos(angle));
        sinFull.push(Math.sin(angle));
        rotHalf.push(d < half ? -x[row + d + half] : x[row + d - half]);
      }
      for (let d = 0; d < HS; d++) out[row + d] = x[row + d] * cosFull[d] + rotHalf[d] * sinFull[d];
    }
  }
  return out;
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

const cases: { B: number; NH: number; T: number; HS: number; theta: number; pos: number }[] = [
  { B: 1, NH: 1, T: 1, HS: 2, theta: 10000, pos: 0 },
  { B: 2, NH: 3, T: 7, HS: 48, theta: 10000, pos: 0 },
  { B: 1, NH: 2, T: 13, HS: 10, theta: 500000, pos: 5 },
  { B: 2, NH: 1, T: 7, HS: 64, theta: 10000, pos: 113 },
];

describe('ropeTables', () => {
  test('inv_freq = theta^(-2i/HS), angle = position * inv_freq, within float32 angle rounding', () => {
    for (const { T, HS, theta, pos } of [...cases, { T: 3, HS: 48, theta: 10000, pos: 1000 }]) {
      const { cos, sin } = ropeTables(T, HS, theta, pos);
      const half = HS / 2;
      assert.equal(cos.length, T * half);
      for (let t = 0; t < T; t++) {
        for (let i = 0; i < half; i++) {
          const angle = (pos + t) * Math.pow(theta, -(2 * i) / HS);
          // float32 inv_freq and angle: |error| <= ~2 ulp(angle) + float32 rounding of cos/sin
          const tol = 4 * angle * 2 ** -24 + 1e-7;
          assert.ok(Math.abs(cos[t * half + i] - Math.cos(angle)) <= tol, `cos t=${t} i=${i}`);
          assert.ok(Math.abs(sin[t * half + i] - Math.sin(angle)) <= tol, `sin t=${t} i=${i}`);
        }
      }
    }
  });
});

describe('ropeForward / ropeBackward', () => {
  for (const { B, NH, T, HS, theta, pos } of cases) {
    const name = `B=${B} NH=${NH} T=${T} HS=${HS} theta=${theta} posOffset=${pos}`;

    test(`${name}: forward vs the float64 rotate_half formula`, () => {
      const x = randArray(B * NH * T * HS, 1 + HS);
      const out = new Float32Array(x.length).fill(NaN);
      ropeForward(out, x, B, NH, T, HS, theta, pos);
      // angles up to ~120 rad in float32: error <= ~1e-5 absolute for |x| <= 1
      assertClose(out, refRope(x, B, NH, T, HS, theta, pos), 2e-5, 0, 'out');
      // passing prebuilt tables gives the same result
      const out2 = new Float32Array(x.length);
      ropeForward(out2, x, B, NH, T, HS, theta, pos, ropeTables(T, HS, theta, pos));
      assert.deepEqual(out2, out);
    });

    test(`${name}: rotation preserves every (i, i + HS/2) pair norm`, () => {
      const x = randArray(B * NH * T * HS, 2 + HS);
      const out = new Float32Array(x.length);
      ropeForward(out, x, B, NH, T, HS, theta, pos);
      const half = HS / 2;
      for (let r = 0; r < B * NH * T; r++) {
        for (let i = 0; i < half; i++) {
          const a = r * HS + i, b = a + half;
          const nIn = Math.hypot(x[a], x[b]), nOut = Math.hypot(out[a], out[b]);
          assert.ok(Math.abs(nIn - nOut) <= 1e-6 * (1 + nIn), `row ${r} pair ${i}: ${nIn} vs ${nOut}`);
        }
      }
    });

    test(`${name}: backward is the adjoint (<R x, y> = <x, R^T y>), accumulates, matches finite differences`, () => {
      const n = B * NH * T * HS;
      const x = randArray(n, 3 + HS), y = randArray(n, 4 + HS);
      const rx = new Float32Array(n);
      ropeForward(rx, x, B, NH, T, HS, theta, pos);
      const d0 = randArray(n, 5);
      const dx = d0.slice();
      ropeBackward(dx, y, B, NH, T, HS, theta, pos);
      const rty = Float64Array.from(dx, (v, i) => v - d0[i]);
      assert.ok(Math.abs(dot(rx, y) - dot(x, rty)) <= 1e-5 * Math.sqrt(n), 'adjoint identity');
      // finite differences of L(x) = sum(y * rope64(x)) at a few coordinates
      const X = Float64Array.from(x), h = 1e-3;
      const loss = () => dot(y, refRope(X, B, NH, T, HS, theta, pos));
      for (const i of [0, n - 1, Math.floor(n / 2), Math.floor(n / 3)]) {
        const keep = X[i];
        X[i] = keep + h;
        const up = loss();
        X[i] = keep - h;
        const down = loss();
        X[i] = keep;
        assert.ok(Math.abs((up - down) / (2 * h) - rty[i]) < 2e-5, `dinp[${i}] vs finite differences`);
      }
      ropeBackward(dx, y, B, NH, T, HS, theta, pos);
      assertClose(dx, Float64Array.from(rty, (v, i) => d0[i] + 2 * v), 1e-6, 1e-6, 'dinp after two calls');
    });
  }

  test('relative positions: q_m . k_n depends only on m - n', () => {
    const HS = 48, T = 13, theta = 10000;
    const q = randArray(HS, 7), k = randArray(HS, 8);
    // the same q and k at every position, rotated at offsets 0 and 37
    const tile = (v: Float32Array) => {
      const a = new Float32Array(T * HS);
      for (let t = 0; t < T; t++) a.set(v, t * HS);
      return a;
    };
    const rot = (v: Float32Array, off: number) => {
      const o = new Float32Array(T * HS);
      ropeForward(o, tile(v), 1, 1, T, HS, theta, off);
      return o;
    };
    const q0 = rot(q, 0), k0 = rot(k, 0), q1 = rot(q, 37), k1 = rot(k, 37);
    const score = (qs: Float32Array, ks: Float32Array, m: number, n: number) =>
      dot(qs.subarray(m * HS, (m + 1) * HS), ks.subarray(n * HS, (n + 1) * HS));
    for (let m = 0; m < T; m++) {
      for (let n = 0; n < T; n++) {
        const s = score(q0, k0, m, n);
        // shifting both positions by 37 leaves the score unchanged
        assert.ok(Math.abs(score(q1, k1, m, n) - s) < 5e-5, `m=${m} n=${n}: shift`);
        // and any pair with the same m - n has the same score
        if (m > 0 && n > 0) assert.ok(Math.abs(score(q0, k0, m - 1, n - 1) - s) < 5e-5, `m=${m} n=${n}: diagonal`);
      }
    }
    // a non-trivial check: the score does change with m - n
    assert.ok(Math.abs(score(q0, k0, 5, 0) - score(q0, k0, 0, 0)) > 1e-3);
  });

  test('decoding: one position at posOffset = p equals row p of the full sequence (bit for bit)', () => {
    const B = 1, NH = 2, T = 113, HS = 48, theta = 10000;
    const x = randArray(B * NH * T * HS, 9);
    const full = new Float32Array(x.length);
    ropeForward(full, x, B, NH, T, HS, theta, 0);
    for (const p of [0, 1, 56, 112]) {
      for (let h = 0; h < NH; h++) {
        const row = (h * T + p) * HS;
        const one = new Float32Array(HS);
        ropeForward(one, x.subarray(row, row + HS), 1, 1, 1, HS, theta, p);
        assert.deepEqual(one, full.subarray(row, row + HS), `p=${p} h=${h}`);
      }
    }
  });
});

describe('ropePartialForward / ropePartialBackward (GPT-NeoX rotary_pct)', () => {
  // Oracle: GPT-NeoX's formula, cat(rope_R(x[..., :R]), x[..., R:]), with rope_R the float64 formula
  // above on heads of size R; the backward as the adjoint (the map is linear).
  const partialCases = [
    { B: 1, NH: 1, T: 1, HS: 6, R: 2, pos: 0 },
    { B: 2, NH: 3, T: 7, HS: 16, R: 4, pos: 0 },
    { B: 1, NH: 2, T: 13, HS: 48, R: 12, pos: 9 },
    { B: 1, NH: 2, T: 5, HS: 10, R: 10, pos: 3 },
  ];
  for (const { B, NH, T, HS, R, pos } of partialCases) {
    test(`B=${B} NH=${NH} T=${T} HS=${HS} R=${R} pos=${pos}: forward vs float64, backward is the adjoint`, () => {
      const theta = 10000;
      const n = B * NH * T * HS;
      const x = randArray(n, 31 + HS, 2);
      const rows = B * NH * T;
      const head = new Float64Array(rows * R);
      for (let r = 0; r < rows; r++) for (let d = 0; d < R; d++) head[r * R + d] = x[r * HS + d];
      const rotated = refRope(head, B, NH, T, R, theta, pos);
      const want = new Float64Array(n);
      for (let r = 0; r < rows; r++) {
        for (let d = 0; d < HS; d++) want[r * HS + d] = d < R ? rotated[r * R + d] : x[r * HS + d];
      }
      const out = new Float32Array(n).fill(NaN);
      ropePartialForward(out, x, B, NH, T, HS, R, theta, pos);
      assertClose(out, want, 1e-6, 1e-5, 'out');
      for (let r = 0; r < rows; r++) for (let d = R; d < HS; d++) assert.equal(out[r * HS + d], x[r * HS + d], 'pass-through features are copied exactly');
      if (R === HS) {
        const full = new Float32Array(n);
        ropeForward(full, x, B, NH, T, HS, theta, pos);
        assert.deepEqual(out, full, 'R = HS is ropeForward');
      }
      // <P x, y> = <x, P^T y>; the backward accumulates onto d0.
      const y = randArray(n, 77 + R);
      const d0 = randArray(n, 78 + R);
      const dx = d0.slice();
      ropePartialBackward(dx, y, B, NH, T, HS, R, theta, pos);
      const adj = Array.from(dx, (v, i) => v - d0[i]);
      const lhs = dot(out, y), rhs = dot(x, adj);
      assert.ok(Math.abs(lhs - rhs) <= 1e-4 * (1 + Math.abs(lhs)), `adjoint: ${lhs} vs ${rhs}`);
    });
  }
});
