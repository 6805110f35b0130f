// Token embedding lookup of the CPU model: out[n] = wte[ids[n]] and its backward, a scatter-add
// into the rows of dwte (llm.c's encoder without the position table: positions come from RoPE; a
// GPT-2 position table is the same lookup with ids = positions). With tied embeddings the LM head's
// matmulBackward accumulates into the same dwte.
// Backward ACCUMULATES (+=) into dwte. No validation here (the model checks ids once); invariants:
// 0 <= ids[n] < V for the V rows of wte, buffers at least as long as their shapes.
// SPEC.md: no section of its own; these are the model's layers, which section 8's trainer runs.

let order = new Int32Array(0); // (N) positions sorted by token id
let rowSum = new Float64Array(0); // (C) one token's gradient, summed in float64

/**
 * out[n, :] = wte[ids[n], :].
 * @example
 *   embeddingForward(x, ids, wte, B * T, C);
 */
export function embeddingForward(
  out: Float32Array, // (N, C)
  ids: Int32Array, // (N), token ids in [0, V)
  wte: Float32Array, // (V, C)
  N: number, C: number,
): void {
  for (let n = 0; n < N; n++) {
    const src = ids[n] * C;
    out.set(wte.subarray(src, src + C), n * C);
  }
}

/**
 * Backward of out[n] = wte[ids[n]]:  dwte[v, :] += sum over n with ids[n] = v of dout[n, :].
 * Positions are grouped by id first so that a token seen many times is summed in float64 and
 * rounded into dwte once, instead of once per occurrence.
 */
export function embeddingBackward(
  dwte: Float32Array, // (V, C), accumulated into
  dout: Float32Array, // (N, C)
  ids: Int32Array, // (N), token ids in [0, V)
  N: number, C: number,
): void {
  if (order.length < N) order = new Int32Array(N);
  if (rowSum.length < C) rowSum = new Float64Array(C);
  const ord = order.subarray(0, N), acc = rowSum;
  for (let n = 0; n < N; n++) ord[n] = n;
  ord.sort((a, b) => ids[a] - ids[b] || a - b);
  let i = 0;
  while (i < N) {
    const id = ids[ord[i]];
    acc.fill(0, 0, C);
    for (; i < N && ids[ord[i]] === id; i++) {
      const src = ord[i] * C;
      for (let c = 0; c < C; c++) acc[c] += dout[src + c];
    }
    const dst = id * C;
    for (let c = 0; c < C; c++) dwte[dst + c] += acc[c];
  }
}
