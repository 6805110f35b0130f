// Tests for the baseline attention kernels (SPEC.md section 6, src/cpu/kernels/baselines.ts):
// each baseline's key pattern and forward against a dense masked float64 reference built from the
// definitions (test/reference/masked.ts), its backward against central finite differences, the
// equivalences with dense attention when the window or budget covers the sequence, and typed errors.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { AttentionShape } from '../../src/core/check.js';
import { ArgumentError, NonFiniteError, ShapeError } from '../../src/core/errors.js';
import {
  BaselineOptions, attentionBackward, attentionBackwardInto, attentionForward, attentionForwardInto,
  baselinePattern, hashPlanes,
} from '../../src/cpu/kernels/baselines.js';
import { Mask, denseMask, fixedMask, hashMask, maskedAttention, qkTopkMask, slidingMask } from '../reference/masked.js';

/** Deterministic inputs (mulberry32), uniform in [-1, 1). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  };
}

interface Case {
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  dout: Float64Array;
  s: AttentionShape;
}

function makeCase(s: AttentionShape, seed: number): Case {
  const r = rng(seed);
  const { B, T, NH, NKV, HS } = s;
  // Scale 1.5 makes softmax rows far from uniform, so wrong key sets show up.
  const fill = (n: number, c: number) => Float64Array.from({ length: n }, () => c * r());
  return {
    q: fill(B * NH * T * HS, 1.5), k: fill(B * NKV * T * HS, 1.5), v: fill(B * NKV * T * HS, 1), dout: fill(B * NH * T * HS, 1), s,
  };
}

/** The reference mask of a baseline, from test/reference/masked.ts. */
function refMask(o: BaselineOptions, q: ArrayLike<number>, k: ArrayLike<number>, s: AttentionShape): Mask {
  switch (o.kind) {
    case 'dense': return denseMask(s);
    case 'window': return slidingMask(s, o.window);
    case 'fixed': return fixedMask(s, o.window);
    case 'hash': return hashMask(q, k, s, hashPlanes(o.seed, s.NKV, s.HS, o.buckets), o.buckets);
    case 'qktopk': return qkTopkMask(q, k, s, o.k, o.window);
  }
}

const CONFIGS: BaselineOptions[] = [
  { kind: 'dense' },
  { kind: 'window', window: 1 },
  { kind: 'window', window: 3 },
  { kind: 'window', window: 50 }, // W > T
  { kind: 'fixed', window: 1 },
  { kind: 'fixed', window: 4 },
  { kind: 'fixed', window: 50 },
  { kind: 'hash', buckets: 2, seed: 7 },
  { kind: 'hash', buckets: 6, seed: 12345 },
  { kind: 'qktopk', k: 3, window: 2 },
  { kind: 'qktopk', k: 5, window: 0 },
  { kind: 'qktopk', k: 0, window: 4 },
  { kind: 'qktopk', k: 2, window: 50 },
  { kind: 'qktopk', k: 0, window: 0 }, // empty rows: out = 0
];

const label = (o: BaselineOptions) => JSON.stringify(o);

// GQA: NH = 4 query heads over NKV = 2 KV heads; HS = 5 and 13 are awkward on purpose.
const SHAPES: AttentionShape[] = [
  { B: 2, T: 1, NH: 4, NKV: 2, HS: 5 },
  { B: 2, T: 7, NH: 4, NKV: 2, HS: 13 },
  { B: 1, T: 37, NH: 4, NKV: 2, HS: 5 },
];

function maxErr(a: ArrayLike<number>, b: ArrayLike<number>, atol: number, rtol: number): { ok: boolean; worst: string } {
  assert.equal(a.length, b.length);
  let ok = true;
  let worst = '';
  let worstExcess = -Infinity;
  for (let i = 0; i < a.length; i++) {
    const excess = Math.abs(a[i] - b[i]) - (atol + rtol * Math.abs(b[i]));
    if (excess > worstExcess) {
      worstExcess = excess;
      worst = `index ${i}: got ${a[i]}, expected ${b[i]}`;
    }
    if (excess > 0) ok = false;
  }
  return { ok, worst };
}

function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, atol: number, rtol: number, what: string): void {
  const { ok, worst } = maxErr(a, b, atol, rtol);
  assert.ok(ok, `${what}: worst ${worst}`);
}

function forward64(o: BaselineOptions, q: Float64Array, k: Float64Array, v: Float64Array, s: AttentionShape): Float64Array {
  const out = new Float64Array(s.B * s.NH * s.T * s.HS);
  attentionForwardInto(out, { q, k, v }, s, o);
  return out;
}

function backward64(o: BaselineOptions, c: Case): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { B, T, NH, NKV, HS } = c.s;
  const dq = new Float64Array(B * NH * T * HS);
  const dk = new Float64Array(B * NKV * T * HS);
  const dv = new Float64Array(B * NKV * T * HS);
  attentionBackwardInto(dq, dk, dv, c.dout, { q: c.q, k: c.k, v: c.v }, c.s, o);
  return { dq, dk, dv };
}

/** Every row of the kernel's pattern, as a set, equals the reference mask's row; gates are 1. */
function checkPattern(o: BaselineOptions, c: Case): void {
  const s = c.s;
  const x = { q: c.q, k: c.k, v: c.v };
  const p = baselinePattern(o, x, s);
  const m = refMask(o, c.q, c.k, s);
  const { B, T, NH, NKV } = s;
  const cols = new Int32Array(p.maxKeys + 1);
  const gates = new Float64Array(p.maxKeys + 1);
  let longest = 0;
  for (let b = 0; b < B; b++) {
    for (let hq = 0; hq < NH; hq++) {
      const head = p.perQueryHead ? hq : Math.floor(hq / (NH / NKV));
      for (let i = 0; i < T; i++) {
        const n = p.row(b, head, i, cols, gates);
        assert.ok(n <= p.maxKeys, `row length ${n} exceeds maxKeys ${p.maxKeys}`);
        longest = Math.max(longest, n);
        const got = Array.from(cols.subarray(0, n)).sort((a, z) => a - z);
        const want: number[] = [];
        for (let j = 0; j < T; j++) if (m.allow[((b * NH + hq) * T + i) * T + j]) want.push(j);
        assert.deepEqual(got, want, `${label(o)} T=${T} b=${b} hq=${hq} i=${i}`);
        for (let c2 = 0; c2 < n; c2++) assert.equal(gates[c2], 1);
      }
    }
  }
  if (o.kind !== 'hash') assert.equal(longest, p.maxKeys, `T=${T}: maxKeys ${p.maxKeys} should be tight`);
}

describe('baseline key patterns match the definitions', () => {
  for (const o of CONFIGS) {
    test(label(o), () => {
      for (const s of SHAPES) checkPattern(o, makeCase(s, 11 + s.T));
    });
  }

  test('ties: equal q.k scores go to the more recent key; a zero vector hashes to bucket 0', () => {
    // Keys drawn from 3 prototypes (exact score ties everywhere), some keys and queries zero (every
    // projection ties at 0, so the argmax's tie rule decides the bucket).
    const s = { B: 1, T: 37, NH: 4, NKV: 2, HS: 5 };
    const c = makeCase(s, 21);
    const protos = [c.k.slice(0, 5), c.k.slice(5, 10), c.k.slice(10, 15)];
    for (let j = 0; j < s.NKV * s.T; j++) {
      const r = (j * 7) % 5;
      c.k.set(r < 3 ? protos[r] : new Float64Array(5), j * 5);
    }
    for (let i = 0; i < s.NH * s.T; i += 4) c.q.fill(0, i * 5, i * 5 + 5);
    for (const o of CONFIGS) if (o.kind === 'qktopk' || o.kind === 'hash') checkPattern(o, c);
    checkPattern({ kind: 'hash', buckets: 10, seed: 3 }, c);
    checkPattern({ kind: 'qktopk', k: 7, window: 1 }, c);
  });

  test('fixed, W = 4, query 9 attends 3, 7 (summaries) and 8, 9 (its block)', () => {
    const s = { B: 1, T: 12, NH: 1, NKV: 1, HS: 2 };
    const c = makeCase(s, 1);
    const p = baselinePattern('fixed', { q: c.q, k: c.k, v: c.v }, s, { window: 4 });
    const cols = new Int32Array(p.maxKeys);
    const n = p.row(0, 0, 9, cols, new Float64Array(p.maxKeys));
    assert.deepEqual(Array.from(cols.subarray(0, n)), [3, 7, 8, 9]);
  });
});

describe('baseline forward equals dense masked float64 attention', () => {
  for (const o of CONFIGS) {
    test(label(o), () => {
      for (const s of SHAPES) {
        const c = makeCase(s, 101 + s.T);
        const ref = maskedAttention(c.q, c.k, c.v, refMask(o, c.q, c.k, s));
        assertClose(forward64(o, c.q, c.k, c.v, s), ref, 1e-13, 1e-12, `Float64 T=${s.T}`);
        // The public function: float64 arithmetic, float32 output.
        const { out } = attentionForward(o.kind, c, s, o);
        assert.ok(out instanceof Float32Array);
        assertClose(out, ref, 1e-6, 1e-6, `Float32 T=${s.T}`);
      }
    });
  }
});

/**
 * Central differences of L = sum(out * dout) for the listed entries of q, k and v. For hash and
 * qktopk, asserts that neither perturbation changes the reference mask, so the difference measures
 * the smooth part only (the discrete choice has no derivative).
 */
function checkFiniteDifferences(o: BaselineOptions, c: Case, pick: (n: number) => number[]): void {
  const eps = 1e-6;
  const loss = (q: Float64Array, k: Float64Array, v: Float64Array) => {
    const out = forward64(o, q, k, v, c.s);
    let l = 0;
    for (let i = 0; i < out.length; i++) l += out[i] * c.dout[i];
    return l;
  };
  const discrete = o.kind === 'hash' || o.kind === 'qktopk';
  const base = discrete ? refMask(o, c.q, c.k, c.s).allow : null;
  const grads = backward64(o, c);
  for (const name of ['q', 'k', 'v'] as const) {
    const x = c[name];
    const g = name === 'q' ? grads.dq : name === 'k' ? grads.dk : grads.dv;
    for (const idx of pick(x.length)) {
      const old = x[idx];
      x[idx] = old + eps;
      if (base && name !== 'v') assert.deepEqual(refMask(o, c.q, c.k, c.s).allow, base, `+eps on ${name}[${idx}] flips the key set`);
      const lp = loss(c.q, c.k, c.v);
      x[idx] = old - eps;
      if (base && name !== 'v') assert.deepEqual(refMask(o, c.q, c.k, c.s).allow, base, `-eps on ${name}[${idx}] flips the key set`);
      const lm = loss(c.q, c.k, c.v);
      x[idx] = old;
      const fd = (lp - lm) / (2 * eps);
      assert.ok(Math.abs(fd - g[idx]) <= 1e-7 + 1e-6 * Math.abs(fd), `d${name}[${idx}]: backward ${g[idx]}, finite difference ${fd}`);
    }
  }
}

describe('baseline backward equals finite differences (float64)', () => {
  for (const o of CONFIGS) {
    test(label(o), () => {
      for (const s of SHAPES) {
        const c = makeCase(s, 1001 + s.T);
        if (s.T <= 7) {
          checkFiniteDifferences(o, c, (n) => Array.from({ length: n }, (_, i) => i));
        } else {
          // T = 37: 60 entries per tensor, spread over every head and position.
          const r = rng(s.T);
          checkFiniteDifferences(o, c, (n) => Array.from({ length: 60 }, () => Math.floor(((r() + 1) / 2) * n)));
        }
      }
    });
  }

  test('public backward (float32 outputs) agrees with the float64 path', () => {
    const s = SHAPES[2];
    const c = makeCase(s, 77);
    for (const o of [CONFIGS[2], CONFIGS[5], CONFIGS[8], CONFIGS[9]]) {
      const want = backward64(o, c);
      const got = attentionBackward(o.kind, c, s, o, c.dout);
      assertClose(got.dq, want.dq, 1e-6, 1e-6, `${label(o)} dq`);
      assertClose(got.dk, want.dk, 1e-6, 1e-6, `${label(o)} dk`);
      assertClose(got.dv, want.dv, 1e-6, 1e-6, `${label(o)} dv`);
    }
  });
});

describe('baselines that cover the whole sequence are dense attention', () => {
  const s = { B: 2, T: 37, NH: 4, NKV: 2, HS: 13 };
  const c = makeCase(s, 5);
  const dense: BaselineOptions = { kind: 'dense' };
  const covering: BaselineOptions[] = [
    { kind: 'window', window: 37 },
    { kind: 'window', window: 1000 },
    { kind: 'fixed', window: 37 },
    { kind: 'fixed', window: 64 },
    { kind: 'qktopk', k: 37, window: 0 },
    { kind: 'qktopk', k: 37, window: 5 },
    { kind: 'qktopk', k: 100, window: 100 },
  ];
  const fwd = forward64(dense, c.q, c.k, c.v, s);
  const bwd = backward64(dense, c);
  for (const o of covering) {
    test(`${label(o)} == dense`, () => {
      assertClose(forward64(o, c.q, c.k, c.v, s), fwd, 0, 0, 'out');
      const g = backward64(o, c);
      assertClose(g.dq, bwd.dq, 0, 0, 'dq');
      assertClose(g.dk, bwd.dk, 0, 0, 'dk');
      assertClose(g.dv, bwd.dv, 0, 0, 'dv');
    });
  }

  test('qktopk with K = 0 is window attention', () => {
    assertClose(forward64({ kind: 'qktopk', k: 0, window: 6 }, c.q, c.k, c.v, s), forward64({ kind: 'window', window: 6 }, c.q, c.k, c.v, s), 0, 0, 'out');
  });
});

describe('hash planes', () => {
  test('deterministic per seed, laid out head by head, different across seeds', () => {
    const a = hashPlanes(3, 2, 5, 6);
    assert.equal(a.length, 2 * 5 * 3);
    assert.deepEqual(hashPlanes(3, 2, 5, 6), a);
    // R_0 is the first HS * nb/2 draws whatever NKV is.
    assert.deepEqual(hashPlanes(3, 1, 5, 6), a.subarray(0, 15));
    const b = hashPlanes(4, 2, 5, 6);
    assert.ok(a.some((x, i) => x !== b[i]));
    // Standard normals: a rough moment check on many draws.
    const big = hashPlanes(9, 1, 100, 200);
    const mean = big.reduce((s, x) => s + x, 0) / big.length;
    const variance = big.reduce((s, x) => s + (x - mean) ** 2, 0) / big.length;
    assert.ok(Math.abs(mean) < 0.05 && Math.abs(variance - 1) < 0.05, `mean ${mean}, variance ${variance}`);
  });

  test('buckets are scale-invariant: scaling q and k by positive factors keeps every key set', () => {
    const s = { B: 1, T: 37, NH: 4, NKV: 2, HS: 5 };
    const c = makeCase(s, 9);
    const o: BaselineOptions = { kind: 'hash', buckets: 8, seed: 1 };
    const p1 = baselinePattern(o, c, s);
    const p2 = baselinePattern(o, { q: c.q.map((x) => 2 * x), k: c.k.map((x) => 0.5 * x), v: c.v }, s);
    const c1 = new Int32Array(s.T);
    const c2 = new Int32Array(s.T);
    const g = new Float64Array(s.T);
    let total = 0;
    for (let hq = 0; hq < s.NH; hq++) {
      for (let i = 0; i < s.T; i++) {
        const n1 = p1.row(0, hq, i, c1, g);
        const n2 = p2.row(0, hq, i, c2, g);
        assert.deepEqual(c2.subarray(0, n2), c1.subarray(0, n1));
        total += n1;
      }
    }
    // 8 buckets: rows hold far fewer keys than dense attention's T(T+1)/2 per head.
    assert.ok(total < (s.NH * s.T * (s.T + 1)) / 2 / 2, `${total} keys`);
  });
});

describe('typed errors on bad input', () => {
  const s = { B: 1, T: 7, NH: 4, NKV: 2, HS: 5 };
  const c = makeCase(s, 3);
  const throwsArg = (f: () => unknown, cls: new (...a: never[]) => Error, pattern: RegExp) =>
    assert.throws(f, (e: unknown) => e instanceof cls && pattern.test((e as Error).message));

  test('unknown kind', () => {
    // @ts-expect-error: not a baseline kind
    throwsArg(() => attentionForward('sparse', c, s, {}), ArgumentError, /^kind: expected one of 'dense', 'window', 'fixed', 'hash', 'qktopk', got "sparse"/);
  });

  test('bad options name the option and the expected range', () => {
    throwsArg(() => attentionForward('window', c, s, { window: 0 }), ArgumentError, /opts\.window: expected an integer >= 1, got 0/);
    throwsArg(() => attentionForward('fixed', c, s, { window: 2.5 }), ArgumentError, /opts\.window: expected an integer >= 1, got 2\.5/);
    // @ts-expect-error: window is required
    throwsArg(() => attentionForward('window', c, s, {}), ArgumentError, /opts\.window: .* got undefined/);
    throwsArg(() => attentionForward('hash', c, s, { buckets: 3, seed: 0 }), ArgumentError, /opts\.buckets: expected an even integer/);
    throwsArg(() => attentionForward('hash', c, s, { buckets: 0, seed: 0 }), ArgumentError, /opts\.buckets: expected an integer >= 2/);
    throwsArg(() => attentionForward('hash', c, s, { buckets: 4, seed: -1 }), ArgumentError, /opts\.seed: expected an integer in \[0, 4294967295\]/);
    throwsArg(() => attentionForward('qktopk', c, s, { k: -1, window: 2 }), ArgumentError, /opts\.k: expected an integer >= 0, got -1/);
    throwsArg(() => baselinePattern('qktopk', c, s, { k: 2, window: NaN }), ArgumentError, /opts\.window: .* got NaN/);
  });

  test('bad shapes and inputs', () => {
    throwsArg(() => attentionForward('dense', c, { ...s, NKV: 3 }, {}), ArgumentError, /shape\.NH: expected a multiple of shape\.NKV \(3\), got 4/);
    throwsArg(() => attentionForward('dense', { ...c, q: c.q.subarray(1) }, s, {}), ShapeError, /inputs\.q: expected length 140/);
    const k = c.k.slice();
    k[4] = NaN;
    throwsArg(() => attentionForward('window', { ...c, k }, s, { window: 2 }), NonFiniteError, /inputs\.k: expected finite numbers, got NaN at index 4/);
    throwsArg(() => attentionBackward('dense', c, s, {}, c.dout.subarray(2)), ShapeError, /dout: expected length 140/);
    const dout = c.dout.slice();
    dout[0] = Infinity;
    throwsArg(() => attentionBackward('qktopk', c, s, { k: 1, window: 1 }, dout), NonFiniteError, /dout: expected finite numbers, got Infinity at index 0/);
  });
});
