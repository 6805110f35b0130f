// Smoke test of the CUDA backend on a machine with a GPU: prints the device, compute capability
// and library versions, compiles one kernel through NVRTC (reporting registers, local memory and
// whether the disk cache served it), and times a 4096^3 fp32 sgemm through cuBLAS with events.
// Not a benchmark suite (bench/ is) and not a correctness test (test/cuda/ is).
// Run: node --import tsx scripts/cuda-smoke.ts
// FLOP of one sgemm: 2 * M * N * K (a multiply and an add per term); warm-up runs excluded; the
// median of 10 timed batches of 10 products each.

import { CudaBackend } from '../src/cuda/backend.js';
import { findCudaLibraries } from '../src/cuda/find.js';
import { cudaAvailability } from '../src/cuda/runtime.js';
import { addInPlaceSource } from '../src/cuda/kernels/layout.js';

const libs = findCudaLibraries();
console.log('libraries:');
for (const line of libs.lines) console.log(`  ${line}`);
const avail = cudaAvailability();
if (!avail.available) {
  console.log(`CUDA not available: ${avail.reason}`);
  process.exit(1);
}
const rt = avail.runtime;
const [major, minor] = rt.computeCapability;
console.log(`device:    ${rt.name}, compute capability ${major}.${minor} (${rt.arch}), ${rt.multiprocessors} SMs, ${(rt.totalMemory / 2 ** 30).toFixed(1)} GiB`);
console.log(`versions:  driver API ${Math.floor(rt.driverVersion / 1000)}.${(rt.driverVersion % 1000) / 10}, NVRTC ${rt.nvrtcVersion.join('.')}, cuBLAS ${rt.cublasVersion}`);

// One kernel through NVRTC (or the disk cache).
const t0 = performance.now();
const k = rt.kernel(addInPlaceSource());
const ms = performance.now() - t0;
console.log(`kernel:    ${k.name} ${rt.compiles > 0 ? 'compiled' : 'loaded from the cache'} in ${ms.toFixed(1)} ms ` +
  `(${k.registers} registers, ${k.localBytes} bytes local, up to ${k.maxThreads} threads); cache ${rt.cacheDir}`);

// sgemm 4096^3: out (N, OC) = inp (N, C) @ weight (OC, C)^T.
const be = new CudaBackend(rt);
const n = 4096;
const a = be.alloc(n * n), w = be.alloc(n * n), out = be.alloc(n * n);
const host = new Float32Array(n * n);
for (let i = 0; i < host.length; i++) host[i] = Math.sin(i) * 0.5;
be.upload(a, host);
be.upload(w, host);
for (let i = 0; i < 3; i++) be.matmulForward(out, a, w, null, n, n, n);
be.synchronize();
const start = rt.createEvent(), end = rt.createEvent();
const times: number[] = [];
const batch = 10;
for (let r = 0; r < 10; r++) {
  rt.record(start);
  for (let i = 0; i < batch; i++) be.matmulForward(out, a, w, null, n, n, n);
  rt.record(end);
  times.push(rt.elapsedMs(start, end) / batch);
}
times.sort((x, y) => x - y);
const median = times[times.length >> 1];
const flop = 2 * n * n * n;
console.log(`sgemm:     ${n}x${n}x${n} fp32 (cuBLAS, no TF32): median ${median.toFixed(3)} ms, ${(flop / (median * 1e-3) / 1e12).toFixed(1)} TFLOP/s ` +
  `(min ${times[0].toFixed(3)} ms, max ${times[times.length - 1].toFixed(3)} ms)`);

// A spot check of one element against a float64 dot product, so a wrong transpose cannot pass as fast.
const got = be.download(out);
let worst = 0;
for (const [row, col] of [[0, 0], [1, 4095], [4095, 17], [2048, 2049]]) {
  let s = 0, mag = 0;
  for (let c = 0; c < n; c++) {
    s += host[row * n + c] * host[col * n + c];
    mag += Math.abs(host[row * n + c] * host[col * n + c]);
  }
  worst = Math.max(worst, Math.abs(got[row * n + col] - s) / mag);
}
console.log(`check:     out[n, o] = sum_c inp[n, c] weight[o, c], worst |error| / sum|terms| = ${worst.toExponential(2)} (bound K * 2^-24 = ${(n * 2 ** -24).toExponential(2)})`);
rt.destroyEvent(start);
rt.destroyEvent(end);
for (const b of [a, w, out]) be.free(b);
rt.close();
if (worst > n * 2 ** -24) process.exit(1);
