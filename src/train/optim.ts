// The optimizer of the trainer: AdamW (Loshchilov & Hutter, decoupled weight decay, PyTorch's
// torch.optim.AdamW update; the CPU backend's adamw op), the clipping factor, and the learning-rate schedule (linear
// warm-up, then cosine decay to minLr, as llm.c and nanoGPT). Works on plain Float32Array tensors
// with caller-owned gradient and moment buffers; math per element in float64. Not a parameter
// registry: the model owns the list of tensors and passes one decay flag per tensor.
// Checks are O(number of tensors) per call and throw the typed errors of core/errors.ts.
// SPEC.md: section 8's `train` (--lr and the schedule behind it).

import { ArgumentError, ShapeError } from '../core/errors.js';

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export interface ScheduleOptions {
  maxLr: number;
  minLr: number;
  warmup: number; // steps of linear warm-up
  total: number; // step at which the cosine reaches minLr
}

function checkNumber(name: string, x: number, ok: boolean, expected: string): void {
  if (typeof x !== 'number' || !Number.isFinite(x) || !ok) throw new ArgumentError(name, expected, x);
}

function checkStep(name: string, step: number, min: number): void {
  if (typeof step !== 'number' || !Number.isInteger(step) || step < min) {
    throw new ArgumentError(name, `an integer >= ${min}`, step);
  }
}

/**
 * One AdamW step, in place on params[i], m[i] and v[i]; step counts from 1 (bias correction):
 *   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
 *   p -= lr (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps) + lr wd p     (wd only where decay[i])
 * which is torch.optim.AdamW's update (it shrinks p by (1 - lr wd) first; the same arithmetic).
 * @example
 *   adamwStep(params, grads, m, v, step, { lr: 3e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 },
 *     specs.map((s) => s.decay)); // decay matrices, not norm weights
 */
export function adamwStep(
  params: readonly Float32Array[], // params[i]: any shape, flat
  grads: readonly Float32Array[], // grads[i]: same length as params[i]
  m: readonly Float32Array[], // first moments, zero before step 1
  v: readonly Float32Array[], // second moments, zero before step 1
  step: number,
  opts: AdamWOptions,
  decay: readonly boolean[], // decay[i]: true for matrices (projections, embeddings), false for norms and biases
): void {
  checkStep('step', step, 1);
  const { lr, beta1, beta2, eps, weightDecay } = opts;
  checkNumber('opts.lr', lr, lr >= 0, 'a finite number >= 0');
  checkNumber('opts.beta1', beta1, beta1 >= 0 && beta1 < 1, 'a number in [0, 1)');
  checkNumber('opts.beta2', beta2, beta2 >= 0 && beta2 < 1, 'a number in [0, 1)');
  checkNumber('opts.eps', eps, eps > 0, 'a finite number > 0');
  checkNumber('opts.weightDecay', weightDecay, weightDecay >= 0, 'a finite number >= 0');
  const count = params.length;
  if (grads.length !== count) throw new ShapeError('grads', `${count} tensors (one per parameter)`, `${grads.length}`);
  if (m.length !== count) throw new ShapeError('m', `${count} tensors (one per parameter)`, `${m.length}`);
  if (v.length !== count) throw new ShapeError('v', `${count} tensors (one per parameter)`, `${v.length}`);
  if (decay.length !== count) throw new ShapeError('decay', `${count} flags (one per parameter)`, `${decay.length}`);
  for (let i = 0; i < count; i++) {
    const n = params[i].length;
    if (grads[i].length !== n) throw new ShapeError(`grads[${i}]`, `length ${n} (as params[${i}])`, `length ${grads[i].length}`);
    if (m[i].length !== n) throw new ShapeError(`m[${i}]`, `length ${n} (as params[${i}])`, `length ${m[i].length}`);
    if (v[i].length !== n) throw new ShapeError(`v[${i}]`, `length ${n} (as params[${i}])`, `length ${v[i].length}`);
  }
  const bc1 = 1 - Math.pow(beta1, step);
  const bc2 = 1 - Math.pow(beta2, step);
  for (let i = 0; i < count; i++) {
    const p = params[i], g = grads[i], mi = m[i], vi = v[i];
    const wd = decay[i] ? weightDecay : 0;
    for (let j = 0; j < p.length; j++) {
      const gj = g[j];
      const mj = beta1 * mi[j] + (1 - beta1) * gj;
      const vj = beta2 * vi[j] + (1 - beta2) * gj * gj;
      mi[j] = mj;
      vi[j] = vj;
      const pj = p[j];
      p[j] = pj - lr * ((mj / bc1) / (Math.sqrt(vj / bc2) + eps) + wd * pj);
    }
  }
}

/**
 * The factor that clips gradients of global norm `norm` to maxNorm: maxNorm / norm above the
 * limit, else 1. A non-finite norm gives 1 (nothing to scale by): the trainer stops on it.
 * The backend applies the factor inside its AdamW step (Backend.adamw's gradScale).
 * @example
 *   clipScale(Math.sqrt(be.sumSquares(grads.flat)), 1.0);
 */
export function clipScale(norm: number, maxNorm: number): number {
  checkNumber('maxNorm', maxNorm, maxNorm > 0, 'a finite number > 0');
  return Number.isFinite(norm) && norm > maxNorm ? maxNorm / norm : 1;
}

/**
 * Learning rate at step (counted from 0), llm.c's schedule:
 *   step < warmup:           maxLr (step + 1) / warmup
 *   warmup <= step < total:  minLr + (maxLr - minLr) (1 + cos(pi (step - warmup) / (total - warmup))) / 2
 *   step >= total:           minLr
 * @example
 *   learningRate(0, { maxLr: 1e-3, minLr: 1e-4, warmup: 100, total: 5000 }); // 1e-5
 */
export function learningRate(step: number, opts: ScheduleOptions): number {
  const { maxLr, minLr, warmup, total } = opts;
  checkStep('step', step, 0);
  checkNumber('opts.maxLr', maxLr, maxLr >= 0, 'a finite number >= 0');
  checkNumber('opts.minLr', minLr, minLr >= 0 && minLr <= maxLr, `a finite number in [0, opts.maxLr = ${maxLr}]`);
  checkStep('opts.warmup', warmup, 0);
  checkStep('opts.total', total, warmup);
  if (step < warmup) return (maxLr * (step + 1)) / warmup;
  if (step >= total) return minLr;
  const ratio = (step - warmup) / (total - warmup);
  return minLr + 0.5 * (maxLr - minLr) * (1 + Math.cos(Math.PI * ratio));
}
