// Softmax cross-entropy over the vocabulary for the CPU model (llm.c's softmax + crossentropy pair,
// fused): per position n, probs[n] = softmax(logits[n]) and losses[n] = -log probs[n, targets[n]].
// Targets of -1 mean "ignore": loss 0 and no gradient (padding, or the positions a fine-tune masks).
// Not the mean over positions: the caller reduces losses and passes the matching dlosses or scale.
// Backward ACCUMULATES (+=) into dlogits. No validation here (the model checks targets once);
// invariants: targets[n] in [0, V) or -1, finite logits, buffers at least as long as their shapes.
// SPEC.md: the loss that section 8's trainer and `sparsek eval` report (perplexity = exp(mean loss)).

/**
 * probs[n, :] = softmax(logits[n, :]); losses[n] = logsumexp(logits[n]) - logits[n, targets[n]]
 * (0 where targets[n] = -1). The loss comes from the float64 log-sum-exp, not from log(float32 prob),
 * so it stays accurate when the target's probability underflows float32.
 * @example
 *   crossEntropyForward(losses, probs, logits, targets, B * T, V);
 */
export function crossEntropyForward(
  losses: Float32Array, // (N)
  probs: Float32Array, // (N, V)
  logits: Float32Array, // (N, V)
  targets: Int32Array, // (N), in [0, V) or -1
  N: number, V: number,
): void {
  for (let n = 0; n < N; n++) {
    const row = n * V;
    let max = -Infinity;
    for (let v = 0; v < V; v++) if (logits[row + v] > max) max = logits[row + v];
    // Subtracting the max keeps every exp in (0, 1]: no overflow for large logits. The exps are
    // parked in probs (float32) and scaled in place: one exp per element, at most ~1.5 ulp of error.
    let sum = 0;
    for (let v = 0; v < V; v++) {
      const e = Math.exp(logits[row + v] - max);
      probs[row + v] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let v = 0; v < V; v++) probs[row + v] *= inv;
    const t = targets[n];
    losses[n] = t < 0 ? 0 : max + Math.log(sum) - logits[row + t];
  }
}

/**
 * Backward of losses[n] = logsumexp(logits[n]) - logits[n, t_n]:
 *   dlogits[n, v] += dloss_n (probs[n, v] - [v = t_n])     (nothing for t_n = -1)
 * dlosses is either one upstream gradient per position (N) or a single scale for all of them
 * (e.g. 1 / number of counted targets, for a mean loss).
 */
export function crossEntropyBackward(
  dlogits: Float32Array, // (N, V), accumulated into
  dlosses: Float32Array | number, // (N), or a scalar applied to every position
  probs: Float32Array, // (N, V), from the forward
  targets: Int32Array, // (N), in [0, V) or -1
  N: number, V: number,
): void {
  for (let n = 0; n < N; n++) {
    const t = targets[n];
    if (t < 0) continue;
    const d = typeof dlosses === 'number' ? dlosses : dlosses[n];
    const row = n * V;
    for (let v = 0; v < V; v++) dlogits[row + v] += d * (probs[row + v] - (v === t ? 1 : 0));
  }
}
