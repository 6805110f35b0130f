// Tests of src/cpu/kernels/activation.ts (SwiGLU, tanh-approximate GELU). Oracles: float64 formulas
// written here (silu(g) = g / (1 + e^-g); gelu = 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))), plus
// values of that formula computed with Python); backward against central finite
// differences of those float64 formulas (h = 1e-5); accumulation; large |inputs| stay finite.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { erf, geluBackward, geluErfBackward, geluErfForward, geluForward, swigluBackward, swigluForward } from '../../src/cpu/kernels/activation.js';
import { rng, randArray, assertClose } from '../helpers.js';

const silu = (g: number) => g / (1 + Math.exp(-g));
const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
const central = (f: (x: number) => number, x: number, h = 1e-5) => (f(x + h) - f(x - h)) / (2 * h);

// Values in the awkward places: 0, tiny, around the knee, and far out on both sides.
function inputs(n: number, seed: number): Float32Array {
  const a = randArray(n, seed, 6);
  const special = [0, 1e-7, -1e-7, 1, -1, 2.5, -2.5, 20, -20, 88, -88, 1000, -1000];
  for (let i = 0; i < Math.min(n, special.length); i++) a[i] = special[i];
  return a;
}

describe('swiglu', () => {
  for (const N of [1, 7, 13, 48]) {
    test(`N=${N}: forward vs float64, backward vs finite differences, accumulation`, () => {
      const gate = inputs(N, 1 + N), up = randArray(N, 2 + N, 3), dout = randArray(N, 3 + N);
      const out = new Float32Array(N).fill(NaN);
      swigluForward(out, gate, up, N);
      assertClose(out, Array.from(gate, (g, i) => silu(g) * up[i]), 1e-7, 1e-6, 'out');
      const dg0 = randArray(N, 4), du0 = randArray(N, 5);
      const dg = dg0.slice(), du = du0.slice();
      swigluBackward(dg, du, dout, gate, up, N);
      // d/dgate of dout * silu(g) * u, and d/dup of the same, by central differences in float64
      const dgRef = Array.from(gate, (g, i) => dg0[i] + dout[i] * up[i] * central(silu, g));
      const duRef = Array.from(gate, (g, i) => du0[i] + dout[i] * silu(g));
      assertClose(dg, dgRef, 1e-5, 1e-5, 'dgate');
      assertClose(du, duRef, 1e-6, 1e-6, 'dup');
      swigluBackward(dg, du, dout, gate, up, N);
      assertClose(dg, dgRef.map((v, i) => 2 * v - dg0[i]), 2e-5, 1e-5, 'dgate after two calls');
      assertClose(du, duRef.map((v, i) => 2 * v - du0[i]), 2e-6, 1e-6, 'dup after two calls');
    });
  }

  test('saturation: silu(-1000) = 0 and silu(1000) = 1000 with finite gradients', () => {
    const gate = Float32Array.of(-1000, 1000, -88, 88), up = Float32Array.of(1, 1, 1, 1);
    const out = new Float32Array(4), dg = new Float32Array(4), du = new Float32Array(4);
    swigluForward(out, gate, up, 4);
    swigluBackward(dg, du, Float32Array.of(1, 1, 1, 1), gate, up, 4);
    assert.equal(Math.abs(out[0]), 0);
    assert.equal(out[1], 1000);
    for (const v of [...out, ...dg, ...du]) assert.ok(Number.isFinite(v), `finite: ${v}`);
    assertClose(dg, [0, 1, 0, 1], 1e-30, 1e-6, 'dgate at saturation');
  });
});

describe('gelu (tanh approximation)', () => {
  test('known values of the tanh formula (PyTorch gelu(approximate="tanh"), GPT-2 gelu_new)', () => {
    // computed outside this project with Python's math module, rounded to 7 decimals
    const x = Float32Array.of(-3, -1, 0, 0.5, 1, 2, 3);
    const want = [-0.0036374, -0.158808, 0, 0.345714, 0.841192, 1.9545977, 2.9963626];
    const out = new Float32Array(x.length);
    geluForward(out, x, x.length);
    assertClose(out, want, 1e-6, 1e-6, 'gelu');
  });

  for (const N of [1, 7, 13, 48]) {
    test(`N=${N}: forward vs float64, backward vs finite differences, accumulation`, () => {
      const x = inputs(N, 11 + N), dout = randArray(N, 12 + N);
      const out = new Float32Array(N).fill(NaN);
      geluForward(out, x, N);
      assertClose(out, Array.from(x, gelu), 1e-7, 1e-6, 'out');
      const d0 = randArray(N, 13);
      const dx = d0.slice();
      geluBackward(dx, dout, x, N);
      const ref = Array.from(x, (v, i) => d0[i] + dout[i] * central(gelu, v));
      assertClose(dx, ref, 1e-5, 1e-5, 'dinp');
      geluBackward(dx, dout, x, N);
      assertClose(dx, ref.map((v, i) => 2 * v - d0[i]), 2e-5, 1e-5, 'dinp after two calls');
      for (const v of [...out, ...dx]) assert.ok(Number.isFinite(v));
    });
  }
});

describe('erf and exact GELU (GPT-NeoX, transformers "gelu")', () => {
  test('erf matches Python math.erf to 2e-15 across its range, and is odd', () => {
    // computed outside this project with Python's math.erf
    const table: [number, number][] = [
      [0, 0], [1e-10, 1.1283791670955126e-10], [0.01, 0.011283415555849618], [0.5, 0.5204998778130465],
      [1, 0.8427007929497149], [1.5, 0.9661051464753108], [1.9324, 0.9937206559326394], [2, 0.9953222650189527],
      [2.5, 0.999593047982555], [3, 0.9999779095030014], [4, 0.9999999845827421], [5.9, 0.9999999999999999], [7, 1],
    ];
    for (const [x, want] of table) {
      assert.ok(Math.abs(erf(x) - want) <= 2e-15, `erf(${x}) = ${erf(x)}, want ${want}`);
      assert.ok(erf(-x) === -erf(x), `erf(-${x}) = ${erf(-x)}`);
    }
    assert.ok(Number.isNaN(erf(NaN)));
    // the tail is where a series would fail: erfc(3) = 2.209049699858544e-05 to 1e-9 relative
    assert.ok(Math.abs(1 - erf(3) - 2.209049699858544e-5) < 1e-9 * 2.2e-5 + 1e-16);
  });

  test('known values of x Phi(x) (PyTorch gelu(approximate="none"))', () => {
    // computed outside this project with Python: 0.5 * x * (1 + math.erf(x / math.sqrt(2)))
    const x = Float32Array.of(-3, -1, 0, 0.5, 1, 2, 3);
    const want = [-0.0040497, -0.1586553, 0, 0.3457312, 0.8413447, 1.9544997, 2.9959503];
    const out = new Float32Array(x.length);
    geluErfForward(out, x, x.length);
    assertClose(out, want, 1e-6, 1e-6, 'gelu');
  });

  const geluExact = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));
  for (const N of [1, 7, 48]) {
    test(`N=${N}: backward vs finite differences, accumulation, large inputs finite`, () => {
      const x = inputs(N, 21 + N), dout = randArray(N, 22 + N);
      const out = new Float32Array(N).fill(NaN);
      geluErfForward(out, x, N);
      assertClose(out, Array.from(x, geluExact), 1e-7, 1e-6, 'out');
      const d0 = randArray(N, 23);
      const dx = d0.slice();
      geluErfBackward(dx, dout, x, N);
      const ref = Array.from(x, (v, i) => d0[i] + dout[i] * central(geluExact, v));
      assertClose(dx, ref, 1e-5, 1e-5, 'dinp');
      for (const v of [...out, ...dx]) assert.ok(Number.isFinite(v));
    });
  }
});
