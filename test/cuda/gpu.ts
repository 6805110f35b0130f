// What the GPU test files share: whether CUDA is usable here (and why not, for the visible skip),
// one CudaBackend for a file's tests, and seeded device copies of test data.
import { test } from 'node:test';
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
