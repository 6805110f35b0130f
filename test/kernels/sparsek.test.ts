// Tests of the SparseK operator (SPEC.md section 1) for both algorithms, 'sort' and 'linear':
// the property laws (sum, box, shift, permutation, order, sparsemax at k = 1), the threshold against a
// float64 bisection, the backward against central differences, and the edge cases SPEC names.
// Not here: causal selection (selection.test.ts) or attention (attention.test.ts).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import { sparsek, sparsekBackward, sparsekRows, sparsekBackwardRows } from '../../src/index.js';
import type { SparsekAlgorithm } from '../../src/index.js';
import { bisectTau, makeRng, sparsekRef, sparsemax, uniform } from '../reference/dense.js';

const ALGORITHMS: SparsekAlgorithm[] = ['sort', 'linear'];

function maxAbs(xs: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < xs.length; i++) m = Math.max(m, Math.abs(xs[i]));
  return m;
}

function sum(xs: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i];
  return s;
}

/**
 * tau agrees with the bisection to 1e-9 relative, with a floor of 1e-9 * max|z| (tau can be ~0 while z
 * is not) and a few subnormal units (fast-check does generate scores like 9.4e-323).
 */
function assertTauClose(got: number, ref: number, z: ArrayLike<number>, what = 'tau'): void {
  if (!Number.isFinite(ref)) {
    assert.equal(got, ref, `${what}: expected ${ref}, got ${got}`);
    return;
  }
  const tol = 1e-9 * Math.max(Math.abs(ref), maxAbs(z)) + 4 * Number.MIN_VALUE;
  assert.ok(Math.abs(got - ref) <= tol, `${what}: expected ${ref}, got ${got} (|diff| ${Math.abs(got - ref)} > ${tol})`);
}

function assertClose(got: ArrayLike<number>, ref: ArrayLike<number>, atol: number, what = 'p'): void {
  assert.equal(got.length, ref.length, `${what}: length`);
  for (let i = 0; i < ref.length; i++) {
    const err = Math.abs(got[i] - ref[i]);
    assert.ok(err <= atol, `${what}[${i}]: expected ${ref[i]}, got ${got[i]} (|diff| ${err} > ${atol})`);
  }
}

// Scores with plenty of ties and extremes (fast-check biases towards bounds and repeats).
const scores = (maxLength = 40) => fc.array(fc.double({ min: -10, max: 10, noNaN: true }), { minLength: 1, maxLength });
// (z, k) with k real in [0, n], sometimes exactly an integer.
const scoresAndBudget = (maxLength = 40) =>
  scores(maxLength).chain((z) =>
    fc.tuple(
      fc.constant(z),
      fc.oneof(fc.integer({ min: 0, max: z.length }), fc.double({ min: 0, max: z.length, noNaN: true })),
    ));

for (const alg of ALGORITHMS) {
  describe(`sparsek (${alg})`, () => {
    test('sum p = k and 0 <= p <= 1', () => {
      fc.assert(fc.property(scoresAndBudget(), ([z, k]) => {
        const { p } = sparsek(z, k, alg);
        for (const x of p) assert.ok(x >= 0 && x <= 1, `p out of [0, 1]: ${x}`);
        assert.ok(Math.abs(sum(p) - k) <= 1e-9 * Math.max(1, z.length), `sum p = ${sum(p)}, k = ${k}`);
      }), { numRuns: 300 });
    });

    test('tau agrees with float64 bisection; p = clip(z - tau, 0, 1)', () => {
      fc.assert(fc.property(scoresAndBudget(), ([z, k]) => {
        const { p, tau } = sparsek(z, k, alg);
        const ref = sparsekRef(z, k);
        assertTauClose(tau, ref.tau, z);
        assertClose(p, ref.p, 1e-9);
      }), { numRuns: 300 });
    });

    test('shift invariance: SparseK(z + c, k) = SparseK(z, k), tau moves by c', () => {
      fc.assert(fc.property(scoresAndBudget(), fc.double({ min: -1000, max: 1000, noNaN: true }), ([z, k], c) => {
        const a = sparsek(z, k, alg);
        const zc = z.map((x) => x + c);
        const b = sparsek(zc, k, alg);
        // z + c is rounded at the scale of |c|: that is the only difference between the two problems.
        assertClose(b.p, a.p, 1e-9);
        if (Number.isFinite(a.tau)) assertTauClose(b.tau - c, a.tau, zc, 'tau(z + c) - c');
        else assert.equal(b.tau, -Infinity);
      }), { numRuns: 200 });
    });

    test('permutation equivariance', () => {
      fc.assert(fc.property(
        scoresAndBudget().chain(([z, k]) => fc.tuple(fc.constant(z), fc.constant(k), fc.shuffledSubarray(z.map((_, i) => i), { minLength: z.length }))),
        ([z, k, perm]) => {
          const a = sparsek(z, k, alg);
          const b = sparsek(perm.map((i) => z[i]), k, alg);
          assertClose(b.p, perm.map((i) => a.p[i]), 1e-12);
          if (Number.isFinite(a.tau)) assertTauClose(b.tau, a.tau, z);
          else assert.equal(b.tau, a.tau);
        },
      ), { numRuns: 200 });
    });

    test('order preservation: z_i >= z_j implies p_i >= p_j', () => {
      fc.assert(fc.property(scoresAndBudget(), ([z, k]) => {
        const { p } = sparsek(z, k, alg);
        for (let i = 0; i < z.length; i++) {
          for (let j = 0; j < z.length; j++) {
            if (z[i] >= z[j]) assert.ok(p[i] >= p[j], `z[${i}]=${z[i]} >= z[${j}]=${z[j]} but p ${p[i]} < ${p[j]}`);
          }
        }
      }), { numRuns: 200 });
    });

    test('SparseK(z, 1) = sparsemax(z)', () => {
      fc.assert(fc.property(scores(), (z) => {
        const { p } = sparsek(z, 1, alg);
        assertClose(p, sparsemax(z), 1e-9);
      }), { numRuns: 300 });
    });

    test('backward: <g, dz> equals central differences of <dp, p(z)> along g (free set unchanged)', () => {
      const h = 1e-6;
      fc.assert(fc.property(
        fc.integer({ min: 1, max: 20 }).chain((n) => fc.tuple(
          fc.array(fc.double({ min: -3, max: 3, noNaN: true }), { minLength: n, maxLength: n }),
          fc.double({ min: 0, max: n, noNaN: true }),
          fc.array(fc.double({ min: -1, max: 1, noNaN: true }), { minLength: n, maxLength: n }),
          fc.array(fc.double({ min: -1, max: 1, noNaN: true }), { minLength: n, maxLength: n }),
        )),
        ([z, k, g, dp]) => {
          const part = (p: Float64Array) => Array.from(p, (x) => (x <= 0 ? 'Z' : x >= 1 ? 'U' : 'F')).join('');
          const p0 = sparsek(z, k, alg).p;
          const pPlus = sparsek(z.map((x, i) => x + h * g[i]), k, alg).p;
          const pMinus = sparsek(z.map((x, i) => x - h * g[i]), k, alg).p;
          // p is piecewise linear in z; central differences are exact while the partition stays put.
          fc.pre(part(p0) === part(pPlus) && part(p0) === part(pMinus));
          let lp = 0;
          let lm = 0;
          for (let i = 0; i < z.length; i++) {
            lp += dp[i] * pPlus[i];
            lm += dp[i] * pMinus[i];
          }
          const fd = (lp - lm) / (2 * h);
          const dz = sparsekBackward(p0, dp);
          let vjp = 0;
          for (let i = 0; i < z.length; i++) vjp += g[i] * dz[i];
          assert.ok(Math.abs(fd - vjp) <= 1e-7, `<g, dz> = ${vjp}, finite difference ${fd}`);
        },
      ), { numRuns: 300 });
    });

    test('ties: all scores equal gives p = k / n', () => {
      for (const [n, k, c] of [[1, 0.5, 3], [4, 2, 0], [7, 3, -2.5], [10, 0.3, 1e6], [13, 12.75, 7]]) {
        const z = new Float64Array(n).fill(c);
        const { p, tau } = sparsek(z, k, alg);
        assertClose(p, new Float64Array(n).fill(k / n), 1e-12);
        assertTauClose(tau, c - k / n, z);
      }
    });

    test('k = 0 gives p = 0 and tau = max(z); k = n gives p = 1 and tau = -Infinity', () => {
      const z = [0.5, -2, 3.25, 3.25, 1];
      const a = sparsek(z, 0, alg);
      assert.deepEqual(Array.from(a.p), [0, 0, 0, 0, 0]);
      assert.equal(a.tau, 3.25);
      const b = sparsek(z, z.length, alg);
      assert.deepEqual(Array.from(b.p), [1, 1, 1, 1, 1]);
      assert.equal(b.tau, -Infinity);
    });

    test('n = 1: p = [k], tau = z - k for 0 < k < 1', () => {
      assert.deepEqual(Array.from(sparsek([4], 0, alg).p), [0]);
      assert.equal(sparsek([4], 0, alg).tau, 4);
      assert.deepEqual(Array.from(sparsek([4], 1, alg).p), [1]);
      assert.equal(sparsek([4], 1, alg).tau, -Infinity);
      const r = sparsek([-1.5], 0.375, alg);
      assert.equal(r.p[0], 0.375);
      assert.equal(r.tau, -1.875);
    });

    test('hand-derived cases (sparsemax example, empty free set takes the smallest tau)', () => {
      // [3, 1, 0.5], k = 1: p = [1, 0, 0] for every t in [1, 2]; the smallest is max over Z = 1.
      const a = sparsek([3, 1, 0.5], 1, alg);
      assert.deepEqual(Array.from(a.p), [1, 0, 0]);
      assert.equal(a.tau, 1);
      // [2, 1, 0, -1], k = 1.5: U = {2}, F = {1}, tau = (sum_F z + |U| - k) / |F| = (1 + 1 - 1.5) / 1 = 0.5,
      // p = [1, 0.5, 0, 0] (and 2 - 0.5 >= 1, 0 - 0.5 <= 0 confirm the partition).
      const b = sparsek([2, 1, 0, -1], 1.5, alg);
      assertClose(b.p, [1, 0.5, 0, 0], 1e-15);
      assert.ok(Math.abs(b.tau - 0.5) <= 1e-15);
    });

    test('empty free set: tau is the smallest point of the flat interval (docs/decisions.md)', () => {
      // Each case: U has k members and Z the rest, so f(t) = k for t in [max_Z z, min_U z - 1];
      // the convention picks the left end, max_Z z.
      const cases: [number[], number, number][] = [
        [[0.1, 0.2, 0.3, 5, -3], 4, -3], // flat on [-3, -0.9]
        [[0.7, 0.7, 0.7, 5, -3], 4, -3], // flat on [-3, -0.3]
        [[0, 0, 1, -1.5], 3, -1.5], // flat on [-1.5, -1]
        [[3, 1, 0.5], 1, 1], // flat on [1, 2]
        [[2, 2, -4, -7, 0.5], 2, 0.5], // flat on [0.5, 1]
      ];
      for (const [z, k, want] of cases) {
        const { p, tau } = sparsek(z, k, alg);
        assert.deepEqual(Array.from(p), z.map((x) => (x - want >= 1 ? 1 : 0)), `p for z = ${JSON.stringify(z)}`);
        assert.ok(Math.abs(tau - want) <= 1e-12, `z = ${JSON.stringify(z)}, k = ${k}: tau = ${tau}, expected ${want}`);
      }
    });

    test('real (non-integer) budgets', () => {
      const rng = makeRng(11);
      for (const n of [3, 8, 31, 100]) {
        const z = uniform(rng, n, -2, 2);
        for (const k of [0.1, 1.5, Math.PI, n - 0.01, n / 3]) {
          if (k > n) continue;
          const { p, tau } = sparsek(z, k, alg);
          const ref = sparsekRef(z, k);
          assertTauClose(tau, ref.tau, z);
          assertClose(p, ref.p, 1e-10);
          assert.ok(Math.abs(sum(p) - k) <= 1e-10 * n);
          // A non-integer budget forces a non-empty free set.
          assert.ok(p.some((x) => x > 0 && x < 1), `k = ${k}: no free entry`);
        }
      }
    });

    test('large offsets (1e8, 1e12): same p as the centred problem, tau shifted', () => {
      const rng = makeRng(12);
      for (const c of [1e8, -1e8, 1e12, -1e12]) {
        for (const [n, k] of [[9, 2.5], [50, 7], [64, 0.75]] as const) {
          const base = uniform(rng, n, -3, 3);
          const z = base.map((x) => x + c);
          // z - c is exact (Sterbenz), so the centred problem has exactly the same breakpoint gaps.
          const centred = z.map((x) => x - c);
          const ref = sparsekRef(centred, k);
          const { p, tau } = sparsek(z, k, alg);
          assertClose(p, ref.p, 1e-9, `p (offset ${c})`);
          // tau itself is representable only to ulp(c); allow a few ulps of |c| on top of 1e-9.
          const tol = 1e-9 * Math.max(1, Math.abs(ref.tau)) + 8 * Number.EPSILON * Math.abs(c);
          assert.ok(Math.abs(tau - c - ref.tau) <= tol, `offset ${c}: tau - c = ${tau - c}, expected ${ref.tau}`);
        }
      }
    });

    test('tiny spreads (1e-8): p resolves the differences', () => {
      const rng = makeRng(13);
      for (const c of [0, 1, -5]) {
        for (const [n, k] of [[10, 3], [25, 2.5], [6, 0.5]] as const) {
          const z = uniform(rng, n, -1e-8, 1e-8).map((x) => x + c);
          const ref = sparsekRef(z, k);
          const { p, tau } = sparsek(z, k, alg);
          // Every entry is free (p near k/n), and p_i - p_j = z_i - z_j: check to 1e-14, far below the 1e-8 spread.
          assertClose(p, ref.p, 1e-14, `p (spread 1e-8 around ${c})`);
          assertTauClose(tau, ref.tau, z);
          for (let i = 0; i < n; i++) {
            for (let j = 0; j < n; j++) {
              if (z[i] > z[j]) assert.ok(p[i] - p[j] > 0.5 * (z[i] - z[j]), 'differences of 1e-8 must survive');
            }
          }
        }
      }
    });

    test('sparsekRows with a scalar budget and with per-row budgets', () => {
      const rng = makeRng(14);
      const n = 7;
      const rows = 9;
      const z = uniform(rng, rows * n, -2, 2);
      const check = (k: number | number[]) => {
        const { p, tau } = sparsekRows(z, n, k, alg);
        assert.equal(p.length, rows * n);
        assert.equal(tau.length, rows);
        for (let r = 0; r < rows; r++) {
          const zr = z.subarray(r * n, (r + 1) * n);
          const kr = typeof k === 'number' ? k : k[r];
          const ref = sparsekRef(zr, kr);
          assertTauClose(tau[r], ref.tau, zr, `tau[${r}]`);
          assertClose(p.subarray(r * n, (r + 1) * n), ref.p, 1e-10, `p row ${r}`);
        }
      };
      check(2.5);
      check([0, 1, 2, 3.5, 7, 0.25, 6.99, 4, 1]);
    });

    test(`large random n = 10^5: agrees with the other algorithm and with bisection`, () => {
      const rng = makeRng(15);
      const n = 100_000;
      const z = uniform(rng, n, -4, 4);
      const other: SparsekAlgorithm = alg === 'sort' ? 'linear' : 'sort';
      for (const k of [12345.5, 3]) {
        const a = sparsek(z, k, alg);
        const b = sparsek(z, k, other);
        assertClose(a.p, b.p, 1e-12, `p ${alg} vs ${other}`);
        assertTauClose(a.tau, bisectTau(z, k), z);
        assert.ok(Math.abs(sum(a.p) - k) <= 1e-9 * k);
      }
      // Many ties (five distinct values): quickselect's classic bad case.
      const zt = Float64Array.from({ length: n }, () => Math.floor(rng() * 5) * 0.5);
      const k = 20000.25;
      const a = sparsek(zt, k, alg);
      assertTauClose(a.tau, bisectTau(zt, k), zt);
      assertClose(a.p, sparsek(zt, k, other).p, 1e-12, `tied p ${alg} vs ${other}`);
    });
  });
}

describe('sparsekBackward', () => {
  test('hand-derived: F = {1, 2} takes dp minus its mean there, zero elsewhere', () => {
    assert.deepEqual(Array.from(sparsekBackward([1, 0.5, 0.5, 0], [1, 2, 4, 8])), [0, -1, 1, 0]);
    // Empty free set: zero gradient.
    assert.deepEqual(Array.from(sparsekBackward([1, 0, 1, 0], [1, 2, 3, 4])), [0, 0, 0, 0]);
  });

  test('sparsekBackwardRows: the formula row by row', () => {
    const rng = makeRng(16);
    const n = 6;
    const z = uniform(rng, 5 * n, -1, 1);
    const { p } = sparsekRows(z, n, 2.5);
    const dp = uniform(rng, 5 * n);
    const dz = sparsekBackwardRows(p, dp, n);
    for (let r = 0; r < 5; r++) {
      const free: number[] = [];
      for (let i = r * n; i < (r + 1) * n; i++) if (p[i] > 0 && p[i] < 1) free.push(i);
      const mean = free.reduce((s, i) => s + dp[i], 0) / free.length;
      for (let i = r * n; i < (r + 1) * n; i++) {
        const want = free.includes(i) ? dp[i] - mean : 0;
        assert.ok(Math.abs(dz[i] - want) <= 1e-14, `dz[${i}] = ${dz[i]}, expected ${want}`);
      }
    }
  });
});

describe('sparsek regression: budgets within rounding of n', () => {
  // 'sort' once looped forever here: f at the last breakpoint rounded to <= k and the walk ran past the
  // array. Runs in a child process so that a regression fails the test instead of hanging the suite.
  for (const alg of ALGORITHMS) {
    test(`${alg}: z = [-2, 1.1], k = 1.9999999999999996 terminates with the bisection's tau`, () => {
      const z = [-2, 1.1];
      const k = 1.9999999999999996; // 2 - 2 ulp
      const code = `import { sparsek } from './src/index.ts';
        const r = sparsek(${JSON.stringify(z)}, ${k}, '${alg}');
        console.log(JSON.stringify({ p: Array.from(r.p), tau: r.tau }));`;
      const res = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
        cwd: new URL('../..', import.meta.url), encoding: 'utf8', timeout: 5_000,
      });
      assert.ok(res.error === undefined && res.status === 0, `sparsek(${JSON.stringify(z)}, ${k}, '${alg}') did not return within 5 s (status ${res.status}, ${res.error?.message ?? res.stderr.slice(0, 300)})`);
      const got = JSON.parse(res.stdout.trim().split('\n').pop()!) as { p: number[]; tau: number };
      const ref = sparsekRef(z, k);
      assertTauClose(got.tau, ref.tau, z);
      assertClose(got.p, ref.p, 1e-12);
    });
  }
});
