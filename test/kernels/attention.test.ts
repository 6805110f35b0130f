// Tests of SparseK attention (SPEC.md section 4) on the CPU: the public float32 forward against a dense
// masked float64 computation over the T x T matrix; every gradient of the float64 internals (dq, dk, dv,
// du) against central finite differences; the consistency laws (K = 0 is sliding-window attention,
// W = 0 with K >= T is dense causal attention); and the public backward against the float64 one.
// Shapes are awkward on purpose: T = 1, 7, 29, 113; HS = 5, 48; GQA NH = 4, NKV = 2; K >= T; W > T.
// Not here: the baselines of section 6 or the generation cache of section 5.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { sparsekAttention, sparsekAttentionBackward } from '../../src/index.js';
import type { AttentionShape } from '../../src/index.js';
import { sparsekAttentionBackwardInto, sparsekAttentionForwardInto } from '../../src/cpu/kernels/attention.js';
import {
  causalMask, makeRng, maskedAttentionRef, selectCausalRef, sparsekAttentionRef, uniform, windowMask,
} from '../reference/dense.js';

interface Case {
  s: AttentionShape;
  K: number;
  W: number;
}

const F32_EPS = 2 ** -23;

function maxAbs(xs: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < xs.length; i++) m = Math.max(m, Math.abs(xs[i]));
  return m;
}

/** |got - ref| <= atol + rtol |ref| elementwise. */
function assertClose(got: ArrayLike<number>, ref: ArrayLike<number>, atol: number, rtol: number, what: string): void {
  assert.equal(got.length, ref.length, `${what}: length`);
  for (let i = 0; i < ref.length; i++) {
    const err = Math.abs(got[i] - ref[i]);
    const tol = atol + rtol * Math.abs(ref[i]);
    assert.ok(err <= tol, `${what}[${i}]: expected ${ref[i]}, got ${got[i]} (|diff| ${err} > ${tol})`);
  }
}

const sizes = ({ B, T, NH, NKV, HS }: AttentionShape) => ({ q: B * NH * T * HS, kv: B * NKV * T * HS, u: B * NKV * T });

/** Float32 inputs (so the public API and the float64 reference see exactly the same values). */
function inputs32(c: Case, seed: number, uValues?: number[]) {
  const rng = makeRng(seed);
  const n = sizes(c.s);
  const u = uValues
    ? Float32Array.from({ length: n.u }, () => uValues[Math.floor(rng() * uValues.length)])
    : Float32Array.from(uniform(rng, n.u, -2, 2));
  return {
    q: Float32Array.from(uniform(rng, n.q, -1.5, 1.5)),
    k: Float32Array.from(uniform(rng, n.kv, -1.5, 1.5)),
    v: Float32Array.from(uniform(rng, n.kv, -1, 1)),
    u,
  };
}

const name = (c: Case) => `B=${c.s.B} T=${c.s.T} NH=${c.s.NH} NKV=${c.s.NKV} HS=${c.s.HS} K=${c.K} W=${c.W}`;
const shape = (B: number, T: number, NH: number, NKV: number, HS: number): AttentionShape => ({ B, T, NH, NKV, HS });

const FORWARD_CASES: Case[] = [
  { s: shape(1, 1, 1, 1, 5), K: 1, W: 0 },
  { s: shape(1, 1, 4, 2, 5), K: 0, W: 0 }, // no keys at all: out = 0
  { s: shape(1, 1, 4, 2, 48), K: 3, W: 1 },
  { s: shape(2, 7, 4, 2, 5), K: 2, W: 3 },
  { s: shape(1, 7, 4, 2, 48), K: 3, W: 10 }, // W > T: pure window
  { s: shape(1, 29, 4, 2, 5), K: 40, W: 0 }, // K >= T
  { s: shape(1, 29, 4, 2, 48), K: 5, W: 4 },
  { s: shape(2, 29, 4, 1, 7), K: 3, W: 1 },
  { s: shape(1, 113, 2, 1, 7), K: 9, W: 16 },
  { s: shape(1, 113, 4, 2, 5), K: 13, W: 0 },
];

describe('sparsekAttention forward', () => {
  for (const c of FORWARD_CASES) {
    test(`matches the dense masked float64 reference: ${name(c)}`, () => {
      const x = inputs32(c, 100 + c.s.T * 7 + c.K * 3 + c.W);
      const ref = sparsekAttentionRef(x.q, x.k, x.v, x.u, c.s, c.K, c.W);
      const { out } = sparsekAttention(x, c.s, { k: c.K, window: c.W });
      assert.ok(out instanceof Float32Array);
      // Computed in float64 and rounded once to float32: half an ulp of float32, plus a hair.
      assertClose(out, ref, 1e-12, 0.5 * F32_EPS * 1.01, 'out');
      // The float64 internal path agrees with the reference to float64 rounding.
      const out64 = new Float64Array(ref.length);
      sparsekAttentionForwardInto(out64, x, c.s, { k: c.K, window: c.W });
      assertClose(out64, ref, 1e-13, 1e-12, 'out (float64)');
    });
  }

  test('heavy ties in u (scores from three values) and large logits', () => {
    for (const c of [{ s: shape(2, 29, 4, 2, 5), K: 4, W: 2 }, { s: shape(1, 31, 2, 2, 6), K: 7, W: 0 }]) {
      const x = inputs32(c, 7, [0, 0.5, 1]);
      for (let i = 0; i < x.q.length; i++) x.q[i] *= 8; // logits up to ~ 8 * 1.5 * 1.5 * sqrt(HS)
      const ref = sparsekAttentionRef(x.q, x.k, x.v, x.u, c.s, c.K, c.W);
      const { out } = sparsekAttention(x, c.s, { k: c.K, window: c.W });
      assertClose(out, ref, 1e-12, 0.5 * F32_EPS * 1.01, `out ${name(c)}`);
    }
  });
});

describe('consistency laws (SPEC section 4)', () => {
  test('K = 0 is sliding-window attention with window W', () => {
    for (const [T, W] of [[7, 0], [7, 1], [7, 3], [29, 4], [29, 29], [7, 12]]) {
      const c: Case = { s: shape(2, T, 4, 2, 5), K: 0, W };
      const x = inputs32(c, 31 + T + W);
      const ref = maskedAttentionRef(x.q, x.k, x.v, c.s, windowMask(W));
      const { out } = sparsekAttention(x, c.s, { k: 0, window: W });
      assertClose(out, ref, 1e-12, 0.5 * F32_EPS * 1.01, `out ${name(c)}`);
      if (W === 0) assert.ok(out.every((o) => o === 0), 'no window and no selection gives o = 0');
    }
  });

  test('W = 0 and K >= T is dense causal attention', () => {
    for (const [T, K] of [[1, 1], [7, 7], [7, 100], [29, 29], [29, 30]]) {
      const c: Case = { s: shape(1, T, 4, 2, 48), K, W: 0 };
      const x = inputs32(c, 57 + T + K);
      const ref = maskedAttentionRef(x.q, x.k, x.v, c.s, causalMask);
      const { out } = sparsekAttention(x, c.s, { k: K, window: 0 });
      assertClose(out, ref, 1e-12, 0.5 * F32_EPS * 1.01, `out ${name(c)}`);
    }
  });
});

// -------------------------------------------------------------------------------------------------
// Gradients by central finite differences on the float64 internals.

/**
 * Scores u (B, NKV, T) with every (u_j, u_j') gap and every |u_j - tau_i| and |u_j - tau_i - 1| (j a
 * candidate of query i) above `margin`, so that neither Sel_i nor the free sets change under an FD step.
 * Redraws with the next seed until the condition holds; returns how many free-but-dropped (in the
 * support of SparseK, outside Sel_i) pairs there are, to show the tau path is exercised.
 */
function separatedScores(c: Case, seed: number, margin: number): { u: Float64Array; dropped: number; freeSel: number } {
  const { B, T, NKV } = c.s;
  for (let attempt = 0; attempt < 500; attempt++) {
    const rng = makeRng(seed + 7919 * attempt);
    const u = uniform(rng, B * NKV * T, -2, 2);
    let ok = true;
    let dropped = 0;
    let freeSel = 0;
    for (let bh = 0; bh < B * NKV && ok; bh++) {
      const row = Array.from(u.subarray(bh * T, (bh + 1) * T));
      const sorted = row.slice().sort((a, b) => a - b);
      for (let r = 1; r < T; r++) if (sorted[r] - sorted[r - 1] <= margin) ok = false;
      const ref = selectCausalRef(row, c.K, c.W);
      for (let i = 0; i < T && ok; i++) {
        const tau = ref.tau[i];
        if (!Number.isFinite(tau) || ref.kq[i] === 0) continue; // no gates: nothing can flip
        for (const j of ref.cand[i]) {
          const d = row[j] - tau;
          if (Math.abs(d) <= margin || Math.abs(d - 1) <= margin) ok = false;
          if (d > 0 && d < 1) {
            if (ref.sel[i].includes(j)) freeSel++;
            else dropped++;
          }
        }
      }
    }
    if (ok) return { u, dropped, freeSel };
  }
  throw new Error(`no well-separated scores found for ${name(c)}`);
}

function checkGradients(c: Case, seed: number): { dropped: number; freeSel: number; duMax: number } {
  const { s, K, W } = c;
  const n = sizes(s);
  const rng = makeRng(seed);
  const h = 1e-6;
  const { u, dropped, freeSel } = separatedScores(c, seed + 1, 1e-4);
  const x = { q: uniform(rng, n.q, -1.5, 1.5), k: uniform(rng, n.kv, -1.5, 1.5), v: uniform(rng, n.kv, -1, 1), u };
  const dout = uniform(rng, n.q, -1, 1);
  const o = { k: K, window: W };
  const out = new Float64Array(n.q);
  const loss = () => {
    sparsekAttentionForwardInto(out, x, s, o);
    let l = 0;
    for (let i = 0; i < out.length; i++) l += dout[i] * out[i];
    return l;
  };
  const dq = new Float64Array(n.q);
  const dk = new Float64Array(n.kv);
  const dv = new Float64Array(n.kv);
  const du = new Float64Array(n.u);
  const plan = sparsekAttentionForwardInto(out, x, s, o);
  sparsekAttentionBackwardInto(dq, dk, dv, du, dout, x, s, o, plan);
  const grads: [string, Float64Array, Float64Array][] = [['dq', x.q, dq], ['dk', x.k, dk], ['dv', x.v, dv], ['du', x.u, du]];
  for (const [label, param, grad] of grads) {
    const fd = new Float64Array(param.length);
    for (let i = 0; i < param.length; i++) {
      const keep = param[i];
      param[i] = keep + h;
      const lp = loss();
      param[i] = keep - h;
      const lm = loss();
      param[i] = keep;
      fd[i] = (lp - lm) / (2 * h);
    }
    assertClose(grad, fd, 1e-7, 1e-6, `${label} (${name(c)})`);
  }
  // No gate depends on u when nothing is selected (K = 0, W >= T) or every candidate is (K >= T, tau = -Infinity).
  if (K === 0 || W >= s.T || K >= s.T) assert.ok(du.every((g) => g === 0), `du must be exactly 0 for ${name(c)}`);
  return { dropped, freeSel, duMax: maxAbs(du) };
}

const GRADIENT_CASES: Case[] = [
  { s: shape(2, 29, 4, 2, 5), K: 3, W: 4 },
  { s: shape(1, 29, 4, 2, 5), K: 5, W: 0 },
  { s: shape(1, 7, 4, 2, 48), K: 2, W: 0 },
  { s: shape(1, 7, 4, 2, 5), K: 3, W: 2 },
  { s: shape(1, 1, 4, 2, 5), K: 1, W: 0 },
  { s: shape(1, 1, 4, 2, 5), K: 0, W: 0 },
  { s: shape(1, 1, 4, 2, 48), K: 2, W: 1 },
  { s: shape(1, 7, 4, 2, 5), K: 0, W: 3 }, // K = 0: du = 0
  { s: shape(1, 29, 4, 2, 5), K: 29, W: 0 }, // K >= T: all gates 1, du = 0
  { s: shape(1, 7, 4, 2, 5), K: 2, W: 9 }, // W > T: no candidates
  { s: shape(1, 29, 4, 2, 5), K: 1, W: 1 },
];

describe('sparsekAttention gradients (float64 internals vs central differences)', () => {
  for (const c of GRADIENT_CASES) {
    test(`dq, dk, dv, du: ${name(c)}`, () => {
      checkGradients(c, 1000 + c.s.T * 13 + c.K * 5 + c.W);
    });
  }

  test('the score gradient is exercised through gates and through tau (free-but-dropped candidates)', () => {
    // K = 2 with scores spread over [-2, 2]: many candidates sit in the free set, more than are selected.
    const c: Case = { s: shape(1, 29, 4, 2, 5), K: 2, W: 3 };
    const { dropped, freeSel, duMax } = checkGradients(c, 4242);
    assert.ok(duMax > 1e-3, `du is (nearly) zero: ${duMax}`);
    assert.ok(freeSel > 0, 'no selected candidate with a fractional gate');
    assert.ok(dropped > 0, 'no candidate in the support of SparseK outside Sel');
  });
});

describe('sparsekAttentionBackward (public, float32)', () => {
  for (const c of [
    { s: shape(2, 29, 4, 2, 5), K: 3, W: 4 },
    { s: shape(1, 7, 4, 2, 48), K: 2, W: 0 },
    { s: shape(1, 113, 2, 1, 7), K: 9, W: 16 },
    { s: shape(1, 1, 4, 2, 5), K: 0, W: 0 },
  ] as Case[]) {
    test(`agrees with the float64 Into version: ${name(c)}`, () => {
      const x = inputs32(c, 300 + c.s.T);
      const n = sizes(c.s);
      const dout = Float32Array.from(uniform(makeRng(301), n.q, -1, 1));
      const o = { k: c.K, window: c.W };
      const g = sparsekAttentionBackward(x, c.s, o, dout);
      const x64 = { q: Float64Array.from(x.q), k: Float64Array.from(x.k), v: Float64Array.from(x.v), u: Float64Array.from(x.u) };
      const ref = { dq: new Float64Array(n.q), dk: new Float64Array(n.kv), dv: new Float64Array(n.kv), du: new Float64Array(n.u) };
      const plan = sparsekAttentionForwardInto(new Float64Array(n.q), x64, c.s, o);
      sparsekAttentionBackwardInto(ref.dq, ref.dk, ref.dv, ref.du, Float64Array.from(dout), x64, c.s, o, plan);
      for (const key of ['dq', 'dk', 'dv', 'du'] as const) {
        assert.ok(g[key] instanceof Float32Array, `${key} is a Float32Array`);
        // dq, dk, dv are accumulated in float64 and rounded once. du is summed over queries in its output
        // buffer, so the float32 version rounds O(T) times: allow T float32 ulps of the largest entry.
        const atol = key === 'du' ? c.s.T * F32_EPS * maxAbs(ref.du) : 1e-12;
        assertClose(g[key], ref[key], atol, 0.5 * F32_EPS * 1.01, key);
      }
    });
  }
});
