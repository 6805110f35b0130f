// Plain float64 oracles for the baseline attention tests (SPEC.md section 6): a boolean T x T mask
// per (batch, query head), built directly from each baseline's definition (docs/baselines.md), and
// dense masked attention over it. Nothing is imported from src/cpu/kernels: the masks are written
// from the definitions, one (i, j) entry at a time, with no sharing of code with the kernels.
// The hash planes are an input here (the random matrix is data, not something to verify).

import type { AttentionShape } from '../../src/core/check.js';

/** allow[((b * NH + hq) * T + i) * T + j] = 1 when query i of query head hq attends key j. */
export interface Mask {
  allow: Uint8Array; // (B, NH, T, T)
  s: AttentionShape;
}

function buildMask(s: AttentionShape, rule: (b: number, hq: number, i: number, j: number) => boolean): Mask {
  const { B, T, NH } = s;
  const allow = new Uint8Array(B * NH * T * T);
  for (let b = 0; b < B; b++)
    for (let hq = 0; hq < NH; hq++)
      for (let i = 0; i < T; i++)
        for (let j = 0; j < T; j++) if (rule(b, hq, i, j)) allow[((b * NH + hq) * T + i) * T + j] = 1;
  return { allow, s };
}

export function denseMask(s: AttentionShape): Mask {
  return buildMask(s, (_b, _hq, i, j) => j <= i);
}

/** i - W < j <= i. */
export function slidingMask(s: AttentionShape, W: number): Mask {
  return buildMask(s, (_b, _hq, i, j) => j <= i && i - j < W);
}

/** j <= i and (same block of W, or j is the last column of its block). */
export function fixedMask(s: AttentionShape, W: number): Mask {
  return buildMask(s, (_b, _hq, i, j) => j <= i && (Math.floor(j / W) === Math.floor(i / W) || j % W === W - 1));
}

/**
 * Angular LSH buckets: planes is (NKV, HS, nb/2); bucket(x) is the first index of the largest of
 * [x R_h, -x R_h]. Query i of head hq attends keys j <= i of KV head h = hq / (NH/NKV) in its bucket, and i.
 */
export function hashMask(q: ArrayLike<number>, k: ArrayLike<number>, s: AttentionShape, planes: ArrayLike<number>, nb: number): Mask {
  const { T, NH, NKV, HS } = s;
  const half = nb / 2;
  const bucket = (x: ArrayLike<number>, xo: number, h: number): number => {
    const vals: number[] = [];
    for (let c = 0; c < half; c++) {
      let dot = 0;
      for (let d = 0; d < HS; d++) dot += x[xo + d] * planes[(h * HS + d) * half + c];
      vals[c] = dot;
      vals[half + c] = -dot;
    }
    let arg = 0;
    for (let idx = 1; idx < nb; idx++) if (vals[idx] > vals[arg]) arg = idx;
    return arg;
  };
  return buildMask(s, (b, hq, i, j) => {
    if (j > i) return false;
    if (j === i) return true;
    const h = Math.floor(hq / (NH / NKV));
    return bucket(q, ((b * NH + hq) * T + i) * HS, h) === bucket(k, ((b * NKV + h) * T + j) * HS, h);
  });
}

/**
 * Exact top-K by q . k: query i of head hq attends i - W < j <= i, plus the K candidates j <= i - W
 * (W = 0: j <= i) with the largest (q_i . k_j, j), found by sorting every candidate.
 */
export function qkTopkMask(q: ArrayLike<number>, k: ArrayLike<number>, s: AttentionShape, K: number, W: number): Mask {
  const { B, T, NH, NKV, HS } = s;
  const chosen = new Set<string>();
  for (let b = 0; b < B; b++) {
    for (let hq = 0; hq < NH; hq++) {
      const h = Math.floor(hq / (NH / NKV));
      for (let i = 0; i < T; i++) {
        const cand: { j: number; score: number }[] = [];
        const last = W > 0 ? i - W : i;
        for (let j = 0; j <= last; j++) {
          let score = 0;
          for (let d = 0; d < HS; d++) score += q[((b * NH + hq) * T + i) * HS + d] * k[((b * NKV + h) * T + j) * HS + d];
          cand.push({ j, score });
        }
        cand.sort((x, y) => (y.score !== x.score ? y.score - x.score : y.j - x.j));
        for (const c of cand.slice(0, K)) chosen.add(`${b},${hq},${i},${c.j}`);
      }
    }
  }
  return buildMask(s, (b, hq, i, j) => j <= i && (i - j < W || chosen.has(`${b},${hq},${i},${j}`)));
}

/**
 * o_i = sum_{j allowed} softmax_j(q_i . k_j / sqrt(HS)) v_j in float64 (o_i = 0 for an empty row).
 * q: (B, NH, T, HS); k, v: (B, NKV, T, HS). Returns out (B, NH, T, HS).
 */
export function maskedAttention(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, m: Mask): Float64Array {
  const { B, T, NH, NKV, HS } = m.s;
  const out = new Float64Array(B * NH * T * HS);
  const scale = 1 / Math.sqrt(HS);
  for (let b = 0; b < B; b++) {
    for (let hq = 0; hq < NH; hq++) {
      const h = Math.floor(hq / (NH / NKV));
      for (let i = 0; i < T; i++) {
        const qo = ((b * NH + hq) * T + i) * HS;
        const logits: number[] = [];
        for (let j = 0; j < T; j++) {
          if (!m.allow[((b * NH + hq) * T + i) * T + j]) {
            logits.push(-Infinity);
            continue;
          }
          let dot = 0;
          for (let d = 0; d < HS; d++) dot += q[qo + d] * k[((b * NKV + h) * T + j) * HS + d];
          logits.push(dot * scale);
        }
        const max = Math.max(...logits);
        if (max === -Infinity) continue;
        const e = logits.map((x) => Math.exp(x - max));
        const sum = e.reduce((a, x) => a + x, 0);
        for (let j = 0; j < T; j++) {
          if (e[j] === 0) continue;
          for (let d = 0; d < HS; d++) out[qo + d] += (e[j] / sum) * v[((b * NKV + h) * T + j) * HS + d];
        }
      }
    }
  }
  return out;
}
