// Argument checks shared by every public entry point: integer ranges, finiteness, buffer lengths,
// and the attention shape of SPEC.md section 7. They throw the typed errors of core/errors.ts.

import { ArgumentError, NonFiniteError, ShapeError } from './errors.js';

/** Dimensions of one attention call (SPEC.md's letters). */
export interface AttentionShape {
  B: number;
  T: number;
  NH: number;
  NKV: number;
  HS: number;
}

/** The selection budget K and local window W of SPEC.md section 3. */
export interface SelectOptions {
  k: number;
  window: number;
}

export function checkInt(name: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer in [${min}, ${max}]`;
    throw new ArgumentError(name, range, v);
  }
  return v;
}

export function checkFinite(name: string, xs: ArrayLike<number>): void {
  for (let i = 0; i < xs.length; i++) {
    const x = xs[i];
    // x - x is NaN exactly for NaN and +-Infinity; one comparison per element keeps this cheap.
    if (x - x !== 0) throw new NonFiniteError(name, i, x);
  }
}

export function checkLength(name: string, xs: ArrayLike<number> | undefined, n: number, dims: string): void {
  if (xs === undefined || xs === null || typeof xs.length !== 'number') {
    throw new ShapeError(name, `an array of length ${n} ${dims}`, String(xs));
  }
  if (xs.length !== n) throw new ShapeError(name, `length ${n} ${dims}`, `length ${xs.length}`);
}

export function checkShape(shape: AttentionShape): AttentionShape {
  const B = checkInt('shape.B', shape?.B, 1);
  const T = checkInt('shape.T', shape.T, 1);
  const NH = checkInt('shape.NH', shape.NH, 1);
  const NKV = checkInt('shape.NKV', shape.NKV, 1);
  const HS = checkInt('shape.HS', shape.HS, 1);
  if (NH % NKV !== 0) throw new ArgumentError('shape.NH', `a multiple of shape.NKV (${NKV})`, NH);
  return { B, T, NH, NKV, HS };
}

export function checkSelectOptions(opts: SelectOptions): SelectOptions {
  return { k: checkInt('opts.k', opts?.k, 0), window: checkInt('opts.window', opts.window, 0) };
}

/** Checks q, k, v (and u when given) against the shape, and that every value is finite. */
export function checkAttentionInputs(
  inputs: { q: ArrayLike<number>; k: ArrayLike<number>; v: ArrayLike<number>; u?: ArrayLike<number> },
  s: AttentionShape,
  needU: boolean,
): void {
  const { B, T, NH, NKV, HS } = s;
  checkLength('inputs.q', inputs.q, B * NH * T * HS, `(B=${B}, NH=${NH}, T=${T}, HS=${HS})`);
  checkLength('inputs.k', inputs.k, B * NKV * T * HS, `(B=${B}, NKV=${NKV}, T=${T}, HS=${HS})`);
  checkLength('inputs.v', inputs.v, B * NKV * T * HS, `(B=${B}, NKV=${NKV}, T=${T}, HS=${HS})`);
  checkFinite('inputs.q', inputs.q);
  checkFinite('inputs.k', inputs.k);
  checkFinite('inputs.v', inputs.v);
  if (needU) {
    checkLength('inputs.u', inputs.u, B * NKV * T, `(B=${B}, NKV=${NKV}, T=${T})`);
    checkFinite('inputs.u', inputs.u!);
  }
}
