// Shared test helpers: a seeded generator independent of src/core/random (so tests never share
// randomness with the code under test), random arrays, and a closeness assertion with atol + rtol.

import assert from 'node:assert/strict';

export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0;
    s = (s ^ (s >>> 12)) >>> 0;
    return s / 2 ** 32;
  };
}

/** Uniform in offset + [-scale, scale), stored as float32. */
export function randArray(n: number, seed: number, scale = 1, offset = 0): Float32Array {
  const r = rng(seed), a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = offset + (r() * 2 - 1) * scale;
  return a;
}

/** Every element within atol + rtol * |want|; the message names the first that is not. */
export function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= atol + rtol * Math.abs(want[i]))) {
      assert.fail(`${what}[${i}]: got ${got[i]}, want ${want[i]} (err ${err.toExponential(2)})`);
    }
  }
}
