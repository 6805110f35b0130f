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
