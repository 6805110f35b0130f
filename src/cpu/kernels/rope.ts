// Rotary position embedding (RoPE) for q and k in (B, NH, T, HS) layout, in the Hugging Face Llama
// convention (`rotate_half`): feature i of the first half pairs with feature i + HS/2, and
//   inv_freq[i] = theta^(-2i / HS),  angle[t, i] = (posOffset + t) * inv_freq[i],  i < HS/2
//   out[i]        = x[i] cos(angle) - x[i + HS/2] sin(angle)
//   out[i + HS/2] = x[i + HS/2] cos(angle) + x[i] sin(angle)
// inv_freq, the angles and cos/sin are rounded to float32 exactly where transformers computes them
// in float32, so that imported Llama checkpoints see the same rotation as in PyTorch (at position
// 1000 float32 angles differ from float64 ones by ~1e-4 rad). Not in place (out and inp are
// distinct buffers); no scaling variants (NTK, YaRN, Llama 3.1 rope_scaling).
// No validation here (the model checks shapes once); invariants: HS even, T >= 1, theta > 0,
// posOffset >= 0 an integer, buffers at least (B, NH, T, HS), tables built for the same T, HS.
// SPEC.md: no section of its own; section 5's cached decoding relies on posOffset (one position
// at offset p rotates exactly as row p of a full sequence).

/** cos and sin of the rotation angles for positions posOffset .. posOffset + T - 1. */
export interface RopeTables {
  cos: Float32Array; // (T, HS/2)
  sin: Float32Array; // (T, HS/2)
}

const f32 = Math.fround;

/**
 * The angle tables of rotary embedding, as transformers' LlamaRotaryEmbedding computes them:
 * inv_freq = 1 / theta^(2i/HS) in float32, angle = float32(position * inv_freq), cos/sin of it.
 * @example
 *   const tables = ropeTables(T, HS, 10000, 0); // build once per (T, posOffset), reuse in every layer
 */
export function ropeTables(T: number, HS: number, theta: number, posOffset: number): RopeTables {
  const half = HS / 2;
  const cos = new Float32Array(T * half);
  const sin = new Float32Array(T * half);
  for (let i = 0; i < half; i++) {
    const invFreq = f32(1 / f32(Math.pow(theta, f32((2 * i) / HS))));
    for (let t = 0; t < T; t++) {
      const angle = f32((posOffset + t) * invFreq);
      cos[t * half + i] = Math.cos(angle);
      sin[t * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

/**
 * out = RoPE(inp): each (x[i], x[i + HS/2]) pair is rotated by angle (posOffset + t) * inv_freq[i].
 * Pass `tables` (from ropeTables with the same T, HS, theta, posOffset) to skip rebuilding them.
 * @example
 *   ropeForward(qRot, q, B, NH, T, HS, 10000, 0);
 */
export function ropeForward(
  out: Float32Array, // (B, NH, T, HS)
  inp: Float32Array, // (B, NH, T, HS)
  B: number, NH: number, T: number, HS: number, theta: number, posOffset: number,
  tables: RopeTables = ropeTables(T, HS, theta, posOffset),
): void {
  const half = HS / 2;
  const { cos, sin } = tables;
  for (let bh = 0; bh < B * NH; bh++) {
    for (let t = 0; t < T; t++) {
      const row = (bh * T + t) * HS;
      const tab = t * half;
      for (let i = 0; i < half; i++) {
        const c = cos[tab + i], s = sin[tab + i];
        const x1 = inp[row + i], x2 = inp[row + half + i];
        out[row + i] = x1 * c - x2 * s;
        out[row + half + i] = x2 * c + x1 * s;
      }
    }
  }
}

/**
 * Backward of the rotation y = R x (R orthogonal per pair): dx += R^T dy, i.e. rotate by -angle:
 *   dx[i]        += dy[i] cos + dy[i + HS/2] sin
 *   dx[i + HS/2] += dy[i + HS/2] cos - dy[i] sin
 * ACCUMULATES into dinp.
 */
export function ropeBackward(
  dinp: Float32Array, // (B, NH, T, HS), accumulated into
  dout: Float32Array, // (B, NH, T, HS)
  B: number, NH: number, T: number, HS: number, theta: number, posOffset: number,
  tables: RopeTables = ropeTables(T, HS, theta, posOffset),
): void {
  const half = HS / 2;
  const { cos, sin } = tables;
  for (let bh = 0; bh < B * NH; bh++) {
    for (let t = 0; t < T; t++) {
      const row = (bh * T + t) * HS;
      const tab = t * half;
      for (let i = 0; i < half; i++) {
        const c = cos[tab + i], s = sin[tab + i];
        const d1 = dout[row + i], d2 = dout[row + half + i];
        dinp[row + i] += d1 * c + d2 * s;
        dinp[row + half + i] += d2 * c - d1 * s;
      }
    }
  }
}

/**
 * Partial RoPE (GPT-NeoX's rotary_pct): the first R features of each head are rotated as a head of
 * size R would be (inv_freq[i] = theta^(-2i/R), feature i pairs with i + R/2), the other HS - R
 * pass through unchanged. R = HS is ropeForward. Invariant: R even, 2 <= R <= HS.
 * @example
 *   ropePartialForward(qRot, q, B, NH, T, 64, 16, 10000, 0); // Pythia: rotary_pct 0.25 of HS 64
 */
export function ropePartialForward(
  out: Float32Array, // (B, NH, T, HS)
  inp: Float32Array, // (B, NH, T, HS)
  B: number, NH: number, T: number, HS: number, R: number, theta: number, posOffset: number,
  tables: RopeTables = ropeTables(T, R, theta, posOffset),
): void {
  const half = R / 2;
  const { cos, sin } = tables;
  for (let bh = 0; bh < B * NH; bh++) {
    for (let t = 0; t < T; t++) {
      const row = (bh * T + t) * HS;
      const tab = t * half;
      for (let i = 0; i < half; i++) {
        const c = cos[tab + i], s = sin[tab + i];
        const x1 = inp[row + i], x2 = inp[row + half + i];
        out[row + i] = x1 * c - x2 * s;
        out[row + half + i] = x2 * c + x1 * s;
      }
      for (let i = R; i < HS; i++) out[row + i] = inp[row + i];
    }
  }
}

/**
 * Backward of ropePartialForward: the rotated features as in ropeBackward, the others pass the
 * gradient through (dx += dy). ACCUMULATES into dinp.
 */
export function ropePartialBackward(
  dinp: Float32Array, // (B, NH, T, HS), accumulated into
  dout: Float32Array, // (B, NH, T, HS)
  B: number, NH: number, T: number, HS: number, R: number, theta: number, posOffset: number,
  tables: RopeTables = ropeTables(T, R, theta, posOffset),
): void {
  const half = R / 2;
  const { cos, sin } = tables;
  for (let bh = 0; bh < B * NH; bh++) {
    for (let t = 0; t < T; t++) {
      const row = (bh * T + t) * HS;
      const tab = t * half;
      for (let i = 0; i < half; i++) {
        const c = cos[tab + i], s = sin[tab + i];
        const d1 = dout[row + i], d2 = dout[row + half + i];
        dinp[row + i] += d1 * c + d2 * s;
        dinp[row + half + i] += d2 * c - d1 * s;
      }
      for (let i = R; i < HS; i++) dinp[row + i] += dout[row + i];
    }
  }
}
