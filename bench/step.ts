// The optimizer half of a benchmark's training step, as src/train/train.ts takes it: clip the
// gradient to norm 1 (as a gradient scale) and one AdamW step per parameter tensor, with fixed
// benchmark hyperparameters (no schedule). Shared by bench/gpu.ts, bench/scaling.ts and
// dev/profile-step.ts so that they time the same work.
import type { Backend } from '../src/backend.js';
import type { Gpt } from '../src/model/gpt.js';
import type { Params } from '../src/model/params.js';
import { clipScale } from '../src/train/optim.js';

/** Clips model's gradients to norm 1 and takes AdamW step `step` (from 1) with moments m and v. */
export function optimizerStep<F, I>(be: Backend<F, I>, model: Gpt<F, I>, m: Params<F>, v: Params<F>, step: number): void {
  const gradScale = clipScale(Math.sqrt(be.sumSquares(model.grads.flat)), 1);
  model.params.views.forEach((p, i) =>
    be.adamw(p, model.grads.views[i], m.views[i], v.views[i], { lr: 3e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step, gradScale }));
}
