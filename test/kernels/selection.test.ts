// Tests of causal selection (SPEC.md section 3): selectCausal against a per-query brute force (sort
// the candidates by (u_j, j), bisect for tau), over random scores, heavy ties, every window size, K = 0,
// K >= T and T = 1; the monotonicity law; and the streaming CausalSelector's bookkeeping.
// Not here: the gates' use in attention (attention.test.ts).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CausalSelector, selectCausal } from '../../src/index.js';
import { bisectTau, makeRng, selectCausalRef, uniform } from '../reference/dense.js';

function assertTauClose(got: number, ref: number, scale: number, what: string): void {
  if (!Number.isFinite(ref)) {
    assert.equal(got, ref, `${what}: expected ${ref}, got ${got}`);
    return;
  }
  const tol = 1e-9 * Math.max(Math.abs(ref), scale) + 4 * Number.MIN_VALUE;
  assert.ok(Math.abs(got - ref) <= tol, `${what}: expected ${ref}, got ${got} (|diff| ${Math.abs(got - ref)} > ${tol})`);
}

/** selectCausal(u, K, W) equals the brute force: Sel_i and theta_i exactly, tau_i to 1e-9 relative. */
function checkAgainstBruteForce(u: ArrayLike<number>, K: number, W: number): void {
  const got = selectCausal(u, { k: K, window: W });
  const ref = selectCausalRef(u, K, W);
  const T = u.length;
  const where = (i: number) => `u = ${JSON.stringify(Array.from(u))}, K = ${K}, W = ${W}, query ${i}`;
  assert.equal(got.selected.length, T);
  assert.equal(got.tau.length, T);
  assert.equal(got.theta.length, T);
  let scale = 0;
  for (let i = 0; i < T; i++) scale = Math.max(scale, Math.abs(u[i]));
  for (let i = 0; i < T; i++) {
    assert.deepEqual(Array.from(got.selected[i]), ref.sel[i], `Sel: ${where(i)}`);
    // Numeric equality: 0 and -0 are the same score (Object.is would tell them apart).
    assert.ok(got.theta[i] === ref.theta[i], `theta: ${where(i)}: expected ${ref.theta[i]}, got ${got.theta[i]}`);
    assertTauClose(got.tau[i], ref.tau[i], scale, `tau: ${where(i)}`);
  }
}

// Scores: continuous, or drawn from a few values so that ties are everywhere.
const scoreArb = fc.oneof(
  fc.double({ min: -5, max: 5, noNaN: true }),
  fc.constantFrom(-1, 0, 0.25, 0.5, 2),
);
const caseArb = fc.array(scoreArb, { minLength: 1, maxLength: 40 }).chain((u) => fc.tuple(
  fc.constant(u),
  fc.integer({ min: 0, max: u.length + 3 }),
  fc.integer({ min: 0, max: u.length + 3 }),
));

describe('selectCausal', () => {
  test('equals the per-query brute force on random scores (ties included)', () => {
    fc.assert(fc.property(caseArb, ([u, K, W]) => checkAgainstBruteForce(u, K, W)), { numRuns: 400 });
  });

  test('heavy ties: every window size from 0 to T + 2, K from 0 to T + 1', () => {
    const rng = makeRng(21);
    const T = 13;
    const values = [0, 1, 1.5];
    const u = Float64Array.from({ length: T }, () => values[Math.floor(rng() * values.length)]);
    for (let W = 0; W <= T + 2; W++) for (let K = 0; K <= T + 1; K++) checkAgainstBruteForce(u, K, W);
    // All scores equal: the most recent candidates win every tie.
    const flat = new Float64Array(T).fill(0.5);
    for (let W = 0; W <= T + 2; W++) for (let K = 0; K <= T + 1; K++) checkAgainstBruteForce(flat, K, W);
  });

  test('continuous scores, T = 113: a sweep of K (not powers of two) and W', () => {
    const u = uniform(makeRng(22), 113, -3, 3);
    for (const K of [0, 1, 5, 17, 112, 113, 200]) for (const W of [0, 1, 3, 64, 113, 120]) checkAgainstBruteForce(u, K, W);
  });

  test('K = 0: nothing selected, theta = -Infinity, tau = max over the candidates', () => {
    const u = [0.3, 2, -1, 5, 4];
    for (const W of [0, 1, 2, 7]) {
      const r = selectCausal(u, { k: 0, window: W });
      for (let i = 0; i < u.length; i++) {
        assert.equal(r.selected[i].length, 0);
        assert.equal(r.theta[i], -Infinity);
        const last = W > 0 ? i - W : i;
        // k_i = 0: tau is max(z) over a non-empty candidate set, -Infinity over an empty one (k_i = |Cand_i|).
        const want = last >= 0 ? Math.max(...u.slice(0, last + 1)) : -Infinity;
        assert.equal(r.tau[i], want, `W = ${W}, query ${i}`);
      }
    }
  });

  test('K >= T: every candidate selected, tau = -Infinity', () => {
    const u = [0.3, 2, -1, 5, 4, 4, -2];
    for (const W of [0, 2, 9]) {
      for (const K of [7, 8, 100]) {
        const r = selectCausal(u, { k: K, window: W });
        for (let i = 0; i < u.length; i++) {
          const last = W > 0 ? i - W : i;
          assert.deepEqual(Array.from(r.selected[i]), Array.from({ length: Math.max(0, last + 1) }, (_, j) => j));
          assert.equal(r.tau[i], -Infinity);
          assert.equal(r.theta[i], last >= 0 ? Math.min(...u.slice(0, last + 1)) : -Infinity);
        }
      }
    }
  });

  test('T = 1', () => {
    for (const [K, W] of [[0, 0], [1, 0], [3, 0], [0, 1], [1, 1], [2, 5]]) checkAgainstBruteForce([0.7], K, W);
    const r = selectCausal([0.7], { k: 1, window: 0 });
    assert.deepEqual(Array.from(r.selected[0]), [0]);
    assert.equal(r.theta[0], 0.7);
    assert.equal(r.tau[0], -Infinity);
  });

  test('hand-derived example: ties go to the more recent candidate', () => {
    // K = 2, W = 0. u = [1, 3, 1, 1]: query 2 has candidates {0, 1, 2}, top 2 by (u, j) = {1, 2};
    // query 3 adds j = 3 with u = 1, which beats (1, 2) on position: Sel_3 = {1, 3}.
    const r = selectCausal([1, 3, 1, 1], { k: 2, window: 0 });
    assert.deepEqual(r.selected.map((s) => Array.from(s)), [[0], [0, 1], [1, 2], [1, 3]]);
    // Query 2: SparseK([1, 3, 1], 2): U = {3}, F = {1, 1}, tau = (2 + 1 - 2) / 2 = 0.5.
    assert.equal(r.tau[2], 0.5);
    // Query 3: SparseK([1, 3, 1, 1], 2): tau = (3 + 1 - 2) / 3 = 2/3.
    assert.ok(Math.abs(r.tau[3] - 2 / 3) <= 1e-15);
    assert.deepEqual(Array.from(r.theta), [1, 1, 1, 1]);
  });

  test('monotonicity: tau never decreases, theta never decreases once Sel is full; Sel_{i+1} within Sel_i plus the new candidate; evicted never return', () => {
    fc.assert(fc.property(caseArb, ([u, K, W]) => {
      const r = selectCausal(u, { k: K, window: W });
      const T = u.length;
      const lastSeen = new Map<number, number>(); // position -> last query that selected it
      for (let i = 0; i < T; i++) {
        if (i > 0) {
          assert.ok(r.tau[i] >= r.tau[i - 1], `tau decreased at ${i}: ${r.tau[i - 1]} -> ${r.tau[i]}`);
          // theta can only rise once Sel is full (k_i = K): before that every new candidate joins Sel, and a
          // low one lowers theta (u = [0, -1], K = 2: theta = 0 then -1). SPEC section 3 states the law
          // without this condition; the tested form is the one that holds.
          if (r.selected[i - 1].length === K) {
            assert.ok(r.theta[i] >= r.theta[i - 1], `theta decreased at ${i}: ${r.theta[i - 1]} -> ${r.theta[i]}`);
          }
          const allowed = new Set(r.selected[i - 1]);
          const fresh = W > 0 ? i - W : i;
          if (fresh >= 0) allowed.add(fresh);
          for (const j of r.selected[i]) assert.ok(allowed.has(j), `query ${i} selects ${j}, not in Sel_${i - 1} + {${fresh}}`);
        }
        for (const j of r.selected[i]) {
          const prev = lastSeen.get(j);
          assert.ok(prev === undefined || prev === i - 1, `position ${j} left the selection after query ${prev} and returned at ${i}`);
          lastSeen.set(j, i);
        }
      }
    }), { numRuns: 300 });
  });
});

describe('CausalSelector', () => {
  /** Pushes u[0..] one at a time and calls check after each push. */
  function stream(u: number[], K: number, check: (s: CausalSelector, j: number, before: Set<number>) => void): void {
    const s = new CausalSelector(K);
    for (let j = 0; j < u.length; j++) {
      const before = new Set(s.selected());
      s.push(u[j], j);
      check(s, j, before);
    }
  }
  const streamArb = fc.tuple(fc.array(scoreArb, { minLength: 1, maxLength: 50 }), fc.integer({ min: 0, max: 12 }));

  test('after each push: tau, Sel, theta and lastEvicted match the brute force', () => {
    fc.assert(fc.property(streamArb, ([u, K]) => {
      let scale = 0;
      stream(u, K, (s, j, before) => {
        scale = Math.max(scale, Math.abs(u[j]));
        const pushed = u.slice(0, j + 1);
        assert.equal(s.candidates, j + 1);
        assertTauClose(s.tau, bisectTau(pushed, Math.min(K, j + 1)), scale, `tau after ${j + 1} pushes`);
        // Selection after this push = the brute force's Sel for a query whose candidates are 0..j.
        const ref = selectCausalRef(pushed, K, 0);
        assert.deepEqual(Array.from(s.selected()), ref.sel[j]);
        assert.ok(s.theta === ref.theta[j], `theta: expected ${ref.theta[j]}, got ${s.theta}`);
        // lastEvicted: the one position that left the selection, or -1.
        const now = new Set(s.selected());
        const left = [...before].filter((p) => !now.has(p));
        assert.deepEqual(left, s.lastEvicted >= 0 ? [s.lastEvicted] : []);
      });
    }), { numRuns: 300 });
  });

  // Regression: the walk in pushThreshold once left a candidate with u = tau exactly (p = 0) in the free
  // heap when f reached K right at its breakpoint, so supportSize over-counted (K = 1, u = [0, 1]: 2, not 1)
  // and a supportCap could report a hit that lost nothing.
  test('supportSize = #{pushed candidates with u > tau}', () => {
    fc.assert(fc.property(streamArb, ([u, K]) => {
      stream(u, K, (s, j) => {
        let support = 0;
        for (let i = 0; i <= j; i++) if (u[i] > s.tau) support++;
        assert.equal(s.supportSize, support, `after ${j + 1} pushes of ${JSON.stringify(u)}, K = ${K}, tau = ${s.tau}`);
      });
    }), { numRuns: 300 });
  });

  test('supportSize, hand-derived: K = 1, u = [0, 1] has tau = 0 and support {1}', () => {
    const s = new CausalSelector(1);
    s.push(0, 0);
    s.push(1, 1);
    assert.equal(s.tau, 0); // f(t) = clip(-t) + clip(1 - t) = 1 exactly for t = 0, and > 1 below
    assert.equal(s.supportSize, 1);
  });

  test('supportCap: no cap hit while the true support fits (K = 1, cap 1, u = [0, 1])', () => {
    const s = new CausalSelector(1, 1);
    s.push(0, 0);
    s.push(1, 1);
    assert.equal(s.tau, 0);
    assert.equal(s.supportSize, 1);
    assert.equal(s.capHits, 0);
  });
});
