// Layout moves and residual adds of the CPU model. toHeads splits the feature axis of a projection
// output into heads, (B, T, NH*HS) -> (B, NH, T, HS), the layout the attention kernels read;
// fromHeads is its inverse. They are permutations, so each one's backward is the other:
//   the backward of toHeads is fromHeads (dinp = fromHeads(dout)) and vice versa.
// toHeads / fromHeads OVERWRITE their output (they are forwards); toHeadsBackward / fromHeadsBackward
// are the same moves but ACCUMULATE (+=), following the convention of every other backward here.
// No validation here (the model checks shapes once); invariants: buffers at least B*T*NH*HS long,
// out does not alias inp.
// SPEC.md: the (B, NH, T, HS) layout of section 7 is what toHeads produces.

/** out (B, NH, T, HS) = [out +] inp (B, T, NH*HS) regrouped by head. */
function splitHeads(out: Float32Array, inp: Float32Array, B: number, T: number, NH: number, HS: number, accumulate: boolean): void {
  const C = NH * HS;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const src = (b * T + t) * C;
      for (let h = 0; h < NH; h++) {
        const dst = ((b * NH + h) * T + t) * HS;
        const s = src + h * HS;
        if (accumulate) {
          for (let d = 0; d < HS; d++) out[dst + d] += inp[s + d];
        } else {
          for (let d = 0; d < HS; d++) out[dst + d] = inp[s + d];
        }
      }
    }
  }
}

/** out (B, T, NH*HS) = [out +] inp (B, NH, T, HS) with the heads concatenated again. */
function mergeHeads(out: Float32Array, inp: Float32Array, B: number, T: number, NH: number, HS: number, accumulate: boolean): void {
  const C = NH * HS;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const dst = (b * T + t) * C;
      for (let h = 0; h < NH; h++) {
        const src = ((b * NH + h) * T + t) * HS;
        const o = dst + h * HS;
        if (accumulate) {
          for (let d = 0; d < HS; d++) out[o + d] += inp[src + d];
        } else {
          for (let d = 0; d < HS; d++) out[o + d] = inp[src + d];
        }
      }
    }
  }
}

/**
 * out[b, h, t, d] = inp[b, t, h * HS + d]. Its backward is fromHeads (or fromHeadsBackward to accumulate).
 * @example
 *   toHeads(q, qProj, B, T, NH, HS); // qProj (B, T, NH*HS) -> q (B, NH, T, HS)
 */
export function toHeads(
  out: Float32Array, // (B, NH, T, HS)
  inp: Float32Array, // (B, T, NH*HS)
  B: number, T: number, NH: number, HS: number,
): void {
  splitHeads(out, inp, B, T, NH, HS, false);
}

/**
 * out[b, t, h * HS + d] = inp[b, h, t, d]. Its backward is toHeads (or toHeadsBackward to accumulate).
 * @example
 *   fromHeads(y, att, B, T, NH, HS); // att (B, NH, T, HS) -> y (B, T, NH*HS)
 */
export function fromHeads(
  out: Float32Array, // (B, T, NH*HS)
  inp: Float32Array, // (B, NH, T, HS)
  B: number, T: number, NH: number, HS: number,
): void {
  mergeHeads(out, inp, B, T, NH, HS, false);
}

/** Backward of toHeads: dinp (B, T, NH*HS) += fromHeads(dout (B, NH, T, HS)). */
export function toHeadsBackward(
  dinp: Float32Array, // (B, T, NH*HS), accumulated into
  dout: Float32Array, // (B, NH, T, HS)
  B: number, T: number, NH: number, HS: number,
): void {
  mergeHeads(dinp, dout, B, T, NH, HS, true);
}

/** Backward of fromHeads: dinp (B, NH, T, HS) += toHeads(dout (B, T, NH*HS)). */
export function fromHeadsBackward(
  dinp: Float32Array, // (B, NH, T, HS), accumulated into
  dout: Float32Array, // (B, T, NH*HS)
  B: number, T: number, NH: number, HS: number,
): void {
  splitHeads(dinp, dout, B, T, NH, HS, true);
}

/** Residual connection: out = a + b (elementwise over N). Its backward is residualBackward. */
export function residualForward(
  out: Float32Array, // (N)
  a: Float32Array, // (N)
  b: Float32Array, // (N)
  N: number,
): void {
  for (let i = 0; i < N; i++) out[i] = a[i] + b[i];
}

/** Backward of out = a + b: da += dout, db += dout. */
export function residualBackward(
  da: Float32Array, // (N), accumulated into
  db: Float32Array, // (N), accumulated into
  dout: Float32Array, // (N)
  N: number,
): void {
  for (let i = 0; i < N; i++) {
    da[i] += dout[i];
    db[i] += dout[i];
  }
}

/** acc += x (elementwise over N): the in-place residual add, and gradient accumulation. */
export function addInPlace(
  acc: Float32Array, // (N), accumulated into
  x: Float32Array, // (N)
  N: number,
): void {
  for (let i = 0; i < N; i++) acc[i] += x[i];
}
