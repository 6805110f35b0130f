// CUDA source of the softmax cross-entropy, mirroring src/cpu/kernels/loss.ts:
//   probs[n] = softmax(logits[n]),  losses[n] = logsumexp(logits[n]) - logits[n, targets[n]]
// with targets of -1 ignored (loss 0, no gradient). One block per row for the forward; the sum of
// exponentials is taken in double and the loss comes from the double log-sum-exp, so it stays
// accurate when the target's probability underflows float. A target >= V (a caller's bug the model
// checks for) gives a NaN loss instead of reading out of bounds.
// Backward ACCUMULATES into dlogits, with one scale for every position (the backend interface's form).
// SPEC.md: the loss section 8's trainer and `sparsek eval` report.

import type { KernelSource } from '../runtime.js';
import { blockReduceSource } from './reduce.js';

/**
 * Forward. Launch: grid N, block BLOCK. Pass 1: row max (block max). Pass 2: sum of exp(l - max)
 * (double block sum). Pass 3: probs = exp(l - max) / sum, recomputing the exponential rather than
 * storing it (one write of probs instead of two). Traffic: logits read three times, probs written once.
 */
export function crossEntropyForwardSource(opts: { BLOCK: number }): KernelSource {
  return {
    name: 'cross_entropy_forward',
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32'],
    source: `${blockReduceSource(opts.BLOCK)}
extern "C" __global__ void __launch_bounds__(BLOCK) cross_entropy_forward(
    float* losses,         // (N)
    float* probs,          // (N, V)
    const float* logits,   // (N, V)
    const int* targets,    // (N), in [0, V) or -1
    int N, int V) {
  size_t row = (size_t)blockIdx.x * V;
  const auto* l = logits + row;  // float or bf16 storage (storage.ts)
  // pass 1
  float mx = -__int_as_float(0x7f800000);  // -inf (NVRTC has no <math.h> macros)
  for (int v = threadIdx.x; v < V; v += BLOCK) mx = fmaxf(mx, l[v]);
  mx = block_max(mx);
  // pass 2: every exp is in (0, 1], no overflow
  double sum = 0.0;
  for (int v = threadIdx.x; v < V; v += BLOCK) sum += (double)expf(l[v] - mx);
  sum = block_sum(sum);
  double inv = 1.0 / sum;
  // pass 3
  for (int v = threadIdx.x; v < V; v += BLOCK) probs[row + v] = (float)((double)expf(l[v] - mx) * inv);
  if (threadIdx.x == 0) {
    int t = targets[blockIdx.x];
    losses[blockIdx.x] = t < 0 ? 0.0f : t >= V ? __int_as_float(0x7fc00000) : (float)((double)mx + log(sum) - (double)l[t]);
  }
}
`,
  };
}

/**
 * Backward of losses[n] = logsumexp(logits[n]) - logits[n, t_n]:
 *   dlogits[n, v] += scale (probs[n, v] - [v = t_n])     (nothing for t_n = -1)
 * Launch: grid ceil(N*V / 256), block 256; probs and dlogits read, dlogits written once.
 */
export function crossEntropyBackwardSource(): KernelSource {
  return {
    name: 'cross_entropy_backward',
    params: ['ptr', 'ptr', 'ptr', 'f64', 'i32', 'i32'],
    source: `
extern "C" __global__ void cross_entropy_backward(
    float* dlogits,        // (N, V), accumulated into
    const float* probs,    // (N, V), from the forward
    const int* targets,    // (N), in [0, V) or -1
    double scale, int N, int V) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)N * V) return;
  int n = (int)(i / V), v = (int)(i % V);
  int t = targets[n];
  if (t < 0) return;
  double g = scale * ((double)probs[i] - (v == t ? 1.0 : 0.0));
  dlogits[i] = (float)((double)dlogits[i] + g);
}
`,
  };
}
