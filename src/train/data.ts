// Token streams and batches for training and evaluation (SPEC.md section 8).
// Documents are encoded once and joined with a blank line, so a batch row may cross a document
// boundary exactly as it would in a long concatenated corpus. Training rows start at seeded
// random offsets; validation uses fixed, evenly spaced rows so every evaluation sees the same text.

import { DataError } from '../core/errors.js';
import { Rng } from '../core/random.js';

export interface Batch {
  inputs: Int32Array; // (B, T)
  targets: Int32Array; // (B, T): inputs shifted by one
}

/** Encodes documents into one stream, separated by the encoding of "\n\n". */
export function encodeDocuments(texts: string[], encode: (s: string) => number[]): Int32Array {
  const sep = encode('\n\n');
  const parts: number[][] = [];
  let n = 0;
  for (const t of texts) {
    const ids = encode(t);
    parts.push(ids, sep);
    n += ids.length + sep.length;
  }
  const out = new Int32Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function checkStream(stream: Int32Array, T: number, what: string): void {
  if (stream.length < T + 1) {
    throw new DataError(`the ${what} split has ${stream.length} tokens; a context of ${T} needs at least ${T + 1} (use a larger corpus or a shorter --context)`);
  }
}

/** A random batch of B rows of T + 1 consecutive tokens, drawn with rng. */
export function sampleBatch(stream: Int32Array, B: number, T: number, rng: Rng, out?: Batch): Batch {
  checkStream(stream, T, 'training');
  const b = out ?? { inputs: new Int32Array(B * T), targets: new Int32Array(B * T) };
  for (let r = 0; r < B; r++) {
    const start = rng.int(stream.length - T);
    b.inputs.set(stream.subarray(start, start + T), r * T);
    b.targets.set(stream.subarray(start + 1, start + T + 1), r * T);
  }
  return b;
}

/** Evenly spaced, non-overlapping rows covering up to maxRows * T tokens of the stream. */
export function evalBatches(stream: Int32Array, B: number, T: number, maxRows: number): Batch[] {
  checkStream(stream, T, 'validation');
  const rows = Math.max(1, Math.min(maxRows, Math.floor((stream.length - 1) / T)));
  // Row r starts at r * span / (rows - 1): rows never overlap, because rows * T <= stream.length - 1.
  const span = stream.length - 1 - T;
  const batches: Batch[] = [];
  for (let r0 = 0; r0 < rows; r0 += B) {
    const n = Math.min(B, rows - r0);
    const inputs = new Int32Array(n * T);
    const targets = new Int32Array(n * T);
    for (let r = 0; r < n; r++) {
      const start = rows > 1 ? Math.floor(((r0 + r) * span) / (rows - 1)) : 0;
      inputs.set(stream.subarray(start, start + T), r * T);
      targets.set(stream.subarray(start + 1, start + T + 1), r * T);
    }
    batches.push({ inputs, targets });
  }
  return batches;
}
