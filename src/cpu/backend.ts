// The CPU backend: the Backend interface of src/backend.ts over Float32Array / Int32Array, each op
// a direct call of the reference kernels in ./kernels. Float buffers come from allocF32, so the
// matmul worker threads can share them.

import type { Backend } from '../backend.js';
import { allocF32 } from './threads.js';
import { matmulForward, matmulBackward } from './kernels/matmul.js';
import { rmsnormForward, rmsnormBackward, layernormForward, layernormBackward } from './kernels/norm.js';
import { ropeForward, ropeBackward, ropePartialForward, ropePartialBackward } from './kernels/rope.js';
import { swigluForward, swigluBackward, geluForward, geluBackward, geluErfForward, geluErfBackward } from './kernels/activation.js';
import { embeddingForward, embeddingBackward } from './kernels/embedding.js';
import { crossEntropyForward, crossEntropyBackward } from './kernels/loss.js';
import { toHeads, fromHeads, addInPlace } from './kernels/layout.js';
import { makeAttention } from './attention-layer.js';
import { adamwStep } from '../train/optim.js';

export const cpuBackend: Backend<Float32Array, Int32Array> = {
  device: 'cpu',
  precision: 'fp32', // every buffer is float32: 'act' storage is too
  alloc: (n) => allocF32(n),
  allocInt: (n) => new Int32Array(n),
  view: (b, offset, n) => b.subarray(offset, offset + n),
  free: () => {},
  length: (b) => b.length,
  upload: (dst, src) => dst.set(src),
  uploadInt: (dst, src) => dst.set(src),
  download: (src) => src,
  zero: (b) => b.fill(0),
  synchronize: () => {},
  embeddingForward,
  embeddingBackward,
  rmsnormForward,
  rmsnormBackward,
  matmulForward,
  matmulBackward,
  toHeads,
  fromHeads,
  ropeForward: (out, inp, B, NH, T, HS, theta, posOffset) => ropeForward(out, inp, B, NH, T, HS, theta, posOffset),
  ropeBackward: (dinp, dout, B, NH, T, HS, theta, posOffset) => ropeBackward(dinp, dout, B, NH, T, HS, theta, posOffset),
  scoresToHeads(u, uFlat, B, T, NKV, eps) {
    for (let b = 0; b < B; b++)
      for (let t = 0; t < T; t++)
        for (let h = 0; h < NKV; h++) u[(b * NKV + h) * T + t] = uFlat[(b * T + t) * NKV + h] + eps * t;
  },
  scoresFromHeads(duFlat, du, B, T, NKV) {
    for (let b = 0; b < B; b++)
      for (let t = 0; t < T; t++)
        for (let h = 0; h < NKV; h++) duFlat[(b * T + t) * NKV + h] = du[(b * NKV + h) * T + t];
  },
  swigluForward,
  swigluBackward,
  addInPlace,
  layernormForward,
  layernormBackward,
  geluForward: (out, inp, n, form) => (form === 'erf' ? geluErfForward(out, inp, n) : geluForward(out, inp, n)),
  geluBackward: (dinp, dout, inp, n, form) => (form === 'erf' ? geluErfBackward(dinp, dout, inp, n) : geluBackward(dinp, dout, inp, n)),
  ropePartialForward: (out, inp, B, NH, T, HS, R, theta, posOffset) => ropePartialForward(out, inp, B, NH, T, HS, R, theta, posOffset),
  ropePartialBackward: (dinp, dout, B, NH, T, HS, R, theta, posOffset) => ropePartialBackward(dinp, dout, B, NH, T, HS, R, theta, posOffset),
  crossEntropyForward,
  crossEntropyBackward,
  attention: makeAttention,
  sumSquares(x) {
    let ss = 0;
    for (let i = 0; i < x.length; i++) ss += x[i] * x[i];
    return ss;
  },
  adamw(p, g, m, v, o) {
    if (o.gradScale !== 1) for (let i = 0; i < g.length; i++) g[i] *= o.gradScale;
    adamwStep([p], [g], [m], [v], o.step, o, [o.weightDecay > 0]);
  },
};
