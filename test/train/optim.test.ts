// Tests of src/train/optim.ts. Oracles: two AdamW steps worked out by hand in float64 (the update
// rule of Loshchilov & Hutter / torch.optim.AdamW, written out term by term here), including a
// tensor without weight decay; the schedule's endpoints and midpoint from its definition; clipping
// from the norm's definition; typed errors on bad input.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { adamwStep, clipScale, learningRate } from '../../src/train/optim.js';
import { cpuBackend } from '../../src/cpu/backend.js';
import { ArgumentError, ShapeError } from '../../src/core/errors.js';

const close = (got: number, want: number, tol: number, what: string) =>
  assert.ok(Math.abs(got - want) <= tol * (1 + Math.abs(want)), `${what}: got ${got}, want ${want}`);

describe('adamwStep', () => {
  test('two steps by hand, decayed and non-decayed tensors', () => {
    const lr = 0.1, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0.01;
    const w = Float32Array.of(1, -2, 0.5); // decayed (a "matrix")
    const s = Float32Array.of(3); // not decayed (a norm weight)
    const gw1 = Float32Array.of(0.5, 0.25, -4), gs1 = Float32Array.of(2);
    const gw2 = Float32Array.of(-0.25, 0.25, 1), gs2 = Float32Array.of(-1);
    const m = [new Float32Array(3), new Float32Array(1)], v = [new Float32Array(3), new Float32Array(1)];
    const params = [w, s];
    const opts = { lr, beta1, beta2, eps, weightDecay };

    // Hand computation for one element with initial p and gradients g1, g2:
    //   step 1: m1 = 0.1 g1, v1 = 0.001 g1^2; mhat = m1 / 0.1 = g1, vhat = v1 / 0.001 = g1^2
    //           p1 = p0 - lr (g1 / (|g1| + eps) + wd p0)
    //   step 2: m2 = 0.9 m1 + 0.1 g2, v2 = 0.999 v1 + 0.001 g2^2; mhat = m2 / 0.19, vhat = v2 / 0.001999
    //           p2 = p1 - lr (mhat / (sqrt(vhat) + eps) + wd p1)
    const hand = (p0: number, g1: number, g2: number, wd: number) => {
      const p1 = p0 - lr * (g1 / (Math.abs(g1) + eps) + wd * p0);
      const m1 = 0.1 * g1, v1 = 0.001 * g1 * g1;
      const m2 = 0.9 * m1 + 0.1 * g2, v2 = 0.999 * v1 + 0.001 * g2 * g2;
      const p2 = p1 - lr * (m2 / 0.19 / (Math.sqrt(v2 / 0.001999) + eps) + wd * p1);
      return { p1, p2, m2, v2 };
    };

    adamwStep(params, [gw1, gs1], m, v, 1, opts, [true, false]);
    // step 1 moves every element by ~lr * sign(g) (plus decay): e.g. 1 - 0.1 (0.99999998 + 0.01)
    close(w[0], 0.899000002, 1e-7, 'w[0] after step 1');
    for (let i = 0; i < 3; i++) close(w[i], hand([1, -2, 0.5][i], gw1[i], gw2[i], weightDecay).p1, 1e-7, `w[${i}] step 1`);
    close(s[0], hand(3, 2, -1, 0).p1, 1e-7, 's[0] step 1 (no decay)');
    close(s[0], 2.9, 1e-7, 's[0] = 3 - 0.1');

    adamwStep(params, [gw2, gs2], m, v, 2, opts, [true, false]);
    for (let i = 0; i < 3; i++) {
      const h = hand([1, -2, 0.5][i], gw1[i], gw2[i], weightDecay);
      close(w[i], h.p2, 1e-6, `w[${i}] step 2`);
      close(m[0][i], h.m2, 1e-6, `m[${i}]`);
      close(v[0][i], h.v2, 1e-6, `v[${i}]`);
    }
    close(s[0], hand(3, 2, -1, 0).p2, 1e-6, 's[0] step 2 (no decay)');
  });

  test('zero gradient: only the decoupled decay moves a decayed tensor', () => {
    const p = Float32Array.of(2, -4), q = Float32Array.of(2);
    adamwStep([p, q], [new Float32Array(2), new Float32Array(1)], [new Float32Array(2), new Float32Array(1)],
      [new Float32Array(2), new Float32Array(1)], 1, { lr: 0.5, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 }, [true, false]);
    close(p[0], 2 * (1 - 0.05), 1e-7, 'p[0]');
    close(p[1], -4 * (1 - 0.05), 1e-7, 'p[1]');
    assert.equal(q[0], 2);
  });

  test('typed errors name the argument', () => {
    const p = [new Float32Array(3)], g = [new Float32Array(3)], m = [new Float32Array(3)], v = [new Float32Array(3)];
    const opts = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };
    assert.throws(() => adamwStep(p, g, m, v, 0, opts, [true]), (e: unknown) => e instanceof ArgumentError && /step/.test(e.message));
    assert.throws(() => adamwStep(p, g, m, v, 1.5, opts, [true]), ArgumentError);
    assert.throws(() => adamwStep(p, [new Float32Array(2)], m, v, 1, opts, [true]),
      (e: unknown) => e instanceof ShapeError && /grads\[0\]/.test(e.message));
    assert.throws(() => adamwStep(p, g, [], v, 1, opts, [true]), (e: unknown) => e instanceof ShapeError && /^m:/.test(e.message));
    assert.throws(() => adamwStep(p, g, m, v, 1, opts, []), (e: unknown) => e instanceof ShapeError && /decay/.test(e.message));
    assert.throws(() => adamwStep(p, g, m, v, 1, { ...opts, beta1: 1 }, [true]), (e: unknown) => e instanceof ArgumentError && /beta1/.test(e.message));
    assert.throws(() => adamwStep(p, g, m, v, 1, { ...opts, lr: NaN }, [true]), (e: unknown) => e instanceof ArgumentError && /lr/.test(e.message));
    assert.throws(() => adamwStep(p, g, m, v, 1, { ...opts, eps: 0 }, [true]), ArgumentError);
  });
});

describe('clipping: sumSquares and clipScale', () => {
  test('the CPU backend sums squares over the whole buffer; clipScale scales a norm above the limit to it', () => {
    const g = Float32Array.of(3, 0, 0, 4, 0); // norm 5
    assert.equal(cpuBackend.sumSquares(g), 25);
    assert.equal(clipScale(5, 10), 1); // below the limit: untouched
    assert.equal(clipScale(5, 1), 0.2);
    // The scale reaches the update: AdamW's step 1 moves p by lr * sign(g) whatever the scale, so
    // check the moments instead (m = (1 - b1) g', v = (1 - b2) g'^2 with g' = 0.2 g).
    const p = new Float32Array(5), m = new Float32Array(5), v = new Float32Array(5);
    cpuBackend.adamw(p, g, m, v, { lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 0.2 });
    close(m[3], 0.1 * 0.8, 1e-7, 'm[3]');
    close(v[0], 0.05 * 0.6 * 0.6, 1e-7, 'v[0]');
  });

  test('non-finite norms are not scaled (the trainer stops on them); bad maxNorm raises ArgumentError', () => {
    assert.equal(clipScale(NaN, 1), 1);
    assert.equal(clipScale(Infinity, 1), 1);
    assert.throws(() => clipScale(1, 0), (e: unknown) => e instanceof ArgumentError && /maxNorm/.test(e.message));
    assert.throws(() => clipScale(1, NaN), ArgumentError);
  });
});

describe('learningRate', () => {
  const opts = { maxLr: 1e-3, minLr: 1e-4, warmup: 10, total: 110 };
  test('linear warm-up then cosine to minLr', () => {
    close(learningRate(0, opts), 1e-4, 1e-12, 'step 0 = maxLr / warmup');
    close(learningRate(4, opts), 5e-4, 1e-12, 'step 4');
    close(learningRate(9, opts), 1e-3, 1e-12, 'last warm-up step reaches maxLr');
    close(learningRate(10, opts), 1e-3, 1e-12, 'cosine starts at maxLr');
    close(learningRate(60, opts), 5.5e-4, 1e-12, 'halfway: (maxLr + minLr) / 2');
    close(learningRate(110, opts), 1e-4, 1e-12, 'total: minLr');
    close(learningRate(5000, opts), 1e-4, 1e-12, 'after total: minLr');
    let prev = Infinity;
    for (let s = 10; s <= 110; s++) {
      const lr = learningRate(s, opts);
      assert.ok(lr <= prev && lr >= opts.minLr, `monotone at ${s}`);
      prev = lr;
    }
  });

  test('no warm-up; warmup = total', () => {
    close(learningRate(0, { ...opts, warmup: 0 }), 1e-3, 1e-12, 'warmup 0 starts at maxLr');
    close(learningRate(9, { ...opts, warmup: 10, total: 10 }), 1e-3, 1e-12, 'warm-up only');
    close(learningRate(10, { ...opts, warmup: 10, total: 10 }), 1e-4, 1e-12, 'then minLr');
  });

  test('bad options raise ArgumentError naming them', () => {
    assert.throws(() => learningRate(-1, opts), (e: unknown) => e instanceof ArgumentError && /step/.test(e.message));
    assert.throws(() => learningRate(0, { ...opts, minLr: 1 }), (e: unknown) => e instanceof ArgumentError && /minLr/.test(e.message));
    assert.throws(() => learningRate(0, { ...opts, total: 5 }), (e: unknown) => e instanceof ArgumentError && /total/.test(e.message));
    assert.throws(() => learningRate(0, { ...opts, warmup: 1.5 }), (e: unknown) => e instanceof ArgumentError && /warmup/.test(e.message));
  });
});
