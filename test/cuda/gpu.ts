// What the GPU test files share: whether CUDA is usable here (and why not, for the visible skip),
// one CudaBackend for a file's tests, and seeded device copies of test data.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cudaAvailability } from '../../src/cuda/runtime.js';
import { CudaBackend } from '../../src/cuda/backend.js';
import type { CudaBuffer, CudaIntBuffer } from '../../src/cuda/backend.js';
import { rng } from '../helpers.js';

const avail = cudaAvailability();
/** false where CUDA works, else the reason every GPU test gives for skipping. */
export const skip: string | false = avail.available ? false : `no CUDA device: ${avail.reason}`;

let cached: CudaBackend | null = null;
/** One fp32 CudaBackend, made on first use (never where CUDA is absent: the tests skip first). */
export function backend(): CudaBackend {
  if (cached === null) cached = new CudaBackend();
  return cached;
}

/** A test skipped on its own when CUDA is absent, so the run's summary counts it as skipped. */
export function gpuTest(name: string, fn: () => void): void {
  test(name, { skip }, fn);
}

/** n seeded values offset + scale * U(-1, 1). */
export function rand(n: number, seed: number, scale = 1, offset = 0): Float32Array {
  const r = rng(seed), a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = offset + (r() * 2 - 1) * scale;
  return a;
}

/** A device copy of a; freed by the caller through the backend (or left to the test's end). */
export function dev(a: Float32Array): CudaBuffer {
  const be = backend();
  const b = be.alloc(a.length);
  be.upload(b, a);
  return b;
}

export function devInt(a: Int32Array): CudaIntBuffer {
  const be = backend();
  const b = be.allocInt(a.length);
  be.uploadInt(b, a);
  return b;
}

/** max |got - want| / max |want| <= tol (both zero counts as 0); returns the ratio. */
export function assertNear(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string): number {
  assert.equal(got.length, want.length, `${what}: length`);
  let scale = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  let worst = 0, at = -1;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= worst)) { worst = err; at = i; } // NaN lands here
  }
  const ratio = scale > 0 ? worst / scale : worst;
  if (!(ratio <= tol)) assert.fail(`${what}[${at}]: got ${got[at]}, want ${want[at]} (error ${worst.toExponential(2)} = ${ratio.toExponential(2)} of max |want| ${scale.toExponential(2)}, tol ${tol})`);
  return ratio;
}
