// Elementwise activations of the CPU model: SwiGLU (the Llama MLP: silu(gate) * up) and GELU with
// the tanh approximation (GPT-2's gelu_new, for GPT-2 imports). llm.c-style forward/backward pairs
// over flat buffers of N elements (N = B * T * hidden); math in float64, storage float32.
// Not the projections around them (matmul.ts). Backward functions ACCUMULATE (+=) into input grads.
// No validation here (the model checks shapes once); invariants: buffers at least N long, finite
// inputs, outputs do not alias inputs.
// SPEC.md: no section of its own; these are the model's layers, which section 8's trainer runs.

/**
 * SwiGLU: out[i] = silu(gate[i]) * up[i],  silu(x) = x * sigmoid(x).
 * @example
 *   swigluForward(h, gate, up, B * T * hidden);
 */
export function swigluForward(
  out: Float32Array, // (N)
  gate: Float32Array, // (N)
  up: Float32Array, // (N)
  N: number,
): void {
  for (let i = 0; i < N; i++) {
    const g = gate[i];
    // 1 / (1 + exp(-g)) is safe in float64 at both ends: exp overflows to Infinity and gives 0.
    out[i] = (g / (1 + Math.exp(-g))) * up[i];
  }
}

/**
 * Backward of out = silu(g) u, with s = sigmoid(g) and silu'(g) = s (1 + g (1 - s)):
 *   dgate += dout u s (1 + g (1 - s));   dup += dout g s
 */
export function swigluBackward(
  dgate: Float32Array, // (N), accumulated into
  dup: Float32Array, // (N), accumulated into
  dout: Float32Array, // (N)
  gate: Float32Array, // (N)
  up: Float32Array, // (N)
  N: number,
): void {
  for (let i = 0; i < N; i++) {
    const g = gate[i], d = dout[i];
    const s = 1 / (1 + Math.exp(-g));
    dgate[i] += d * up[i] * s * (1 + g * (1 - s));
    dup[i] += d * g * s;
  }
}

const GELU_SCALE = Math.sqrt(2 / Math.PI);

/**
 * GELU, tanh approximation (GPT-2's gelu_new, PyTorch's approximate='tanh'):
 * out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
 * @example
 *   geluForward(h, preact, B * T * 4 * C);
 */
export function geluForward(
  out: Float32Array, // (N)
  inp: Float32Array, // (N)
  N: number,
): void {
  for (let i = 0; i < N; i++) {
    const x = inp[i];
    out[i] = 0.5 * x * (1 + Math.tanh(GELU_SCALE * (x + 0.044715 * x * x * x)));
  }
}

/**
 * Backward of y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3):
 *   dinp += dout (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2))
 * (1 - tanh^2 instead of llm.c's 1 / cosh^2: the same value, and no overflow in cosh.)
 */
export function geluBackward(
  dinp: Float32Array, // (N), accumulated into
  dout: Float32Array, // (N)
  inp: Float32Array, // (N)
  N: number,
): void {
  for (let i = 0; i < N; i++) {
    const x = inp[i];
    const th = Math.tanh(GELU_SCALE * (x + 0.044715 * x * x * x));
    const local = 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * GELU_SCALE * (1 + 3 * 0.044715 * x * x);
    dinp[i] += dout[i] * local;
  }
}

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);
const INV_SQRT_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/**
 * The error function in float64 (JavaScript has none), to about 1e-15 absolute: the Maclaurin
 * series below |x| = 2 (its largest term is under 30 there, so little cancels) and the continued
 * fraction of erfc above, evaluated from a fixed depth of 60 (ample for x >= 2).
 * @example
 *   erf(1) // 0.8427007929497149
 */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (Number.isNaN(x)) return NaN;
  if (ax < 2) {
    // erf x = 2/sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1))
    const x2 = x * x;
    let term = x; // (-1)^n x^(2n+1) / n!
    let sum = x;
    for (let n = 1; n < 60; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return TWO_OVER_SQRT_PI * sum;
  }
  if (ax > 6) return Math.sign(x); // erfc(6) = 2e-17
  // erfc x = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
  let t = ax;
  for (let n = 60; n >= 1; n--) t = ax + n / 2 / t;
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / t;
  return Math.sign(x) * (1 - erfc);
}

/**
 * GELU, exact form (PyTorch's default nn.GELU, Hugging Face's "gelu", GPT-NeoX/Pythia):
 * out = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
 * @example
 *   geluErfForward(h, preact, B * T * 4 * C);
 */
export function geluErfForward(
  out: Float32Array, // (N)
  inp: Float32Array, // (N)
  N: number,
): void {
  for (let i = 0; i < N; i++) {
    const x = inp[i];
    out[i] = 0.5 * x * (1 + erf(x * INV_SQRT_2));
  }
}

/**
 * Backward of y = x Phi(x):  dinp += dout (Phi(x) + x phi(x)),  phi(x) = exp(-x^2/2) / sqrt(2 pi).
 */
export function geluErfBackward(
  dinp: Float32Array, // (N), accumulated into
  dout: Float32Array, // (N)
  inp: Float32Array, // (N)
  N: number,
): void {
  for (let i = 0; i < N; i++) {
    const x = inp[i];
    const local = 0.5 * (1 + erf(x * INV_SQRT_2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
    dinp[i] += dout[i] * local;
  }
}
