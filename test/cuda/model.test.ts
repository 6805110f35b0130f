// The whole model on the GPU (issue 4): a forward + backward + AdamW step on the CUDA backend
// equals the same step on the CPU backend (the reference) within fp32 tolerances, for every
// attention kind, and a training step leaves no net device allocation. Skipped visibly without
// a CUDA device.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cudaAvailability } from '../../src/cuda/runtime.js';
import { CudaBackend } from '../../src/cuda/backend.js';
import { Gpt } from '../../src/model/gpt.js';
import { cpuBackend } from '../../src/cpu/backend.js';
import type { Backend } from '../../src/backend.js';
import type { AttentionKind } from '../../src/model/config.js';
import { allocParamsOn } from '../../src/model/params.js';
import { fillParams, randomIds, tinyConfig } from '../model/fixtures.js';

const avail = cudaAvailability();
const skip = avail.available ? false : `no CUDA device: ${avail.reason}`;

/** One training step on a backend; returns the loss, the gradients and the updated parameters (host copies). */
function step<F, I>(be: Backend<F, I>, kind: AttentionKind, T: number) {
  const c = tinyConfig({ attention: kind, context: T, dim: 32, heads: 4, kvHeads: 2, ffnDim: 48, k: 5, window: 4, scoreSlope: 0.05 });
  const host = Gpt.cpu(c).params;
  fillParams(host, 7, 0.4);
  const model = new Gpt(c, be);
  be.upload(model.params.flat, host.flat);
  const B = 2;
  const ids = randomIds(B * T, c.vocabSize, 3);
  const targets = randomIds(B * T, c.vocabSize, 4);
  const loss = model.forward(ids, B, T, targets);
  model.zeroGrad();
  model.backward();
  const grads = Float32Array.from(be.download(model.grads.flat));
  const m = allocParamsOn(c, be);
  const v = allocParamsOn(c, be);
  const norm = Math.sqrt(be.sumSquares(model.grads.flat));
  model.params.views.forEach((p, i) =>
    be.adamw(p, model.grads.views[i], m.views[i], v.views[i], { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 1, gradScale: norm > 1 ? 1 / norm : 1 }));
  const params = Float32Array.from(be.download(model.params.flat));
  model.dispose();
  be.free(m.flat);
  be.free(v.flat);
  return { loss, norm, grads, params };
}

function close(name: string, got: Float32Array, want: Float32Array, atol: number, rtol: number): void {
  let worst = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]) - (atol + rtol * Math.abs(want[i]));
    if (err > worst) {
      worst = err;
      at = i;
    }
  }
  assert.ok(at < 0, `${name}[${at}]: got ${got[at]}, want ${want[at]} (atol ${atol}, rtol ${rtol})`);
}

describe('the model on CUDA equals the model on the CPU', { skip }, () => {
  for (const kind of ['sparsek', 'dense', 'window'] as const) {
    for (const T of [7, 33]) {
      test(`${kind}, T = ${T}: loss, gradients and one AdamW step`, () => {
        const be = new CudaBackend();
        const gpu = step(be, kind, T);
        const cpu = step(cpuBackend, kind, T);
        assert.ok(Math.abs(gpu.loss - cpu.loss) <= 1e-5 * Math.abs(cpu.loss), `loss ${gpu.loss} vs ${cpu.loss}`);
        assert.ok(Math.abs(gpu.norm - cpu.norm) <= 1e-4 * cpu.norm, `grad norm ${gpu.norm} vs ${cpu.norm}`);
        // Gradients are sums over B*T rows in a different order: fp32 rounding of about 1e-6 of the largest term.
        const gmax = cpu.grads.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
        close('grads', gpu.grads, cpu.grads, 1e-5 * gmax, 1e-3);
        // AdamW's first step is lr * g / (|g| + eps): where |g| is near rounding level, fp32 noise in g
        // moves it by up to lr. Compare the update where the gradient is well above that level.
        const big = (i: number) => Math.abs(cpu.grads[i]) > 1e-3 * gmax;
        const pick = (a: Float32Array) => Float32Array.from(a.filter((_, i) => big(i)));
        assert.ok(pick(cpu.params).length > cpu.params.length / 4, 'enough parameters with a large gradient');
        close('params after AdamW', pick(gpu.params), pick(cpu.params), 1e-5, 1e-4);
      });
    }
  }

  test('a training step leaves no net device allocation', () => {
    const be = new CudaBackend();
    step(be, 'sparsek', 33); // warm the kernel and arena caches
    const before = be.counters();
    step(be, 'sparsek', 33);
    const after = be.counters();
    assert.equal(after.inUseBytes, before.inUseBytes, 'bytes in use');
    assert.equal(after.inUseCount, before.inUseCount, 'buffers in use');
    assert.equal(after.driverAllocs, before.driverAllocs, 'cuMemAlloc calls once the cache is warm');
  });
});
