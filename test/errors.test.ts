// Bad input to the public CPU functions (SPEC.md section 7) raises the typed errors of src/core/errors.ts,
// with a message that names the argument and says what was expected. One test per kind of mistake.
// Not here: CLI options, checkpoints and data (their own tests).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ArgumentError, NonFiniteError, ShapeError, SparsekError,
  selectCausal, sparsek, sparsekAttention, sparsekAttentionBackward, sparsekBackward, sparsekRows,
} from '../src/index.js';
import type { AttentionShape } from '../src/index.js';

type ErrorClass = typeof ShapeError | typeof ArgumentError | typeof NonFiniteError;

/** fn throws an instance of cls whose message starts with `arg:` and says what was expected. */
function assertThrowsTyped(fn: () => unknown, cls: ErrorClass, arg: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    assert.ok(e instanceof SparsekError);
    assert.equal((e as InstanceType<ErrorClass>).arg, arg);
    assert.ok(e.message.startsWith(`${arg}: expected `), `message does not name ${arg}: "${e.message}"`);
    return true;
  });
}

const s: AttentionShape = { B: 2, T: 7, NH: 4, NKV: 2, HS: 5 };
const opts = { k: 3, window: 2 };
function good() {
  return {
    q: new Float32Array(s.B * s.NH * s.T * s.HS).fill(0.1),
    k: new Float32Array(s.B * s.NKV * s.T * s.HS).fill(0.2),
    v: new Float32Array(s.B * s.NKV * s.T * s.HS).fill(0.3),
    u: new Float32Array(s.B * s.NKV * s.T).fill(0.4),
  };
}
const dout = () => new Float32Array(s.B * s.NH * s.T * s.HS);

describe('typed errors', () => {
  test('sanity: the well-formed call does not throw', () => {
    assert.doesNotThrow(() => sparsekAttention(good(), s, opts));
    assert.doesNotThrow(() => sparsekAttentionBackward(good(), s, opts, dout()));
  });

  test('q of the wrong length: ShapeError naming inputs.q', () => {
    assertThrowsTyped(() => sparsekAttention({ ...good(), q: new Float32Array(7) }, s, opts), ShapeError, 'inputs.q');
  });

  test('k of the wrong length: ShapeError naming inputs.k', () => {
    const x = good();
    assertThrowsTyped(() => sparsekAttention({ ...x, k: x.k.subarray(1) }, s, opts), ShapeError, 'inputs.k');
  });

  test('v of the wrong length: ShapeError naming inputs.v', () => {
    const x = good();
    assertThrowsTyped(() => sparsekAttention({ ...x, v: new Float32Array(x.v.length + 5) }, s, opts), ShapeError, 'inputs.v');
  });

  test('u of the wrong length (B * NH * T instead of B * NKV * T): ShapeError naming inputs.u', () => {
    assertThrowsTyped(() => sparsekAttention({ ...good(), u: new Float32Array(s.B * s.NH * s.T) }, s, opts), ShapeError, 'inputs.u');
  });

  test('dout of the wrong length: ShapeError naming dout', () => {
    assertThrowsTyped(() => sparsekAttentionBackward(good(), s, opts, new Float32Array(3)), ShapeError, 'dout');
  });

  test('NH not a multiple of NKV: ArgumentError naming shape.NH', () => {
    const bad = { ...s, NH: 3 };
    const x = good();
    const q = new Float32Array(bad.B * bad.NH * bad.T * bad.HS);
    assertThrowsTyped(() => sparsekAttention({ ...x, q }, bad, opts), ArgumentError, 'shape.NH');
  });

  test('negative K: ArgumentError naming opts.k', () => {
    assertThrowsTyped(() => sparsekAttention(good(), s, { k: -1, window: 2 }), ArgumentError, 'opts.k');
    assertThrowsTyped(() => selectCausal([1, 2, 3], { k: -2, window: 0 }), ArgumentError, 'opts.k');
  });

  test('non-integer W: ArgumentError naming opts.window', () => {
    assertThrowsTyped(() => sparsekAttention(good(), s, { k: 3, window: 2.5 }), ArgumentError, 'opts.window');
    assertThrowsTyped(() => sparsekAttentionBackward(good(), s, { k: 3, window: 0.5 }, dout()), ArgumentError, 'opts.window');
  });

  test('NaN in u: NonFiniteError naming inputs.u (and u for selectCausal)', () => {
    const x = good();
    x.u[5] = NaN;
    assertThrowsTyped(() => sparsekAttention(x, s, opts), NonFiniteError, 'inputs.u');
    assertThrowsTyped(() => sparsekAttentionBackward(x, s, opts, dout()), NonFiniteError, 'inputs.u');
    assertThrowsTyped(() => selectCausal([0.5, NaN, 1], { k: 1, window: 0 }), NonFiniteError, 'u');
  });

  test('Infinity in q: NonFiniteError naming inputs.q', () => {
    const x = good();
    x.q[11] = Infinity;
    assertThrowsTyped(() => sparsekAttention(x, s, opts), NonFiniteError, 'inputs.q');
    x.q[11] = -Infinity;
    assertThrowsTyped(() => sparsekAttentionBackward(x, s, opts, dout()), NonFiniteError, 'inputs.q');
  });

  test('sparsek budget outside [0, n]: ArgumentError naming k', () => {
    for (const k of [-0.5, 3.5, 4, NaN, Infinity]) assertThrowsTyped(() => sparsek([1, 2, 3], k), ArgumentError, 'k');
    assertThrowsTyped(() => sparsek([1, 2, 3], 4, 'sort'), ArgumentError, 'k');
    assertThrowsTyped(() => sparsekRows([1, 2, 3, 4], 2, [1, 3]), ArgumentError, 'k');
  });

  test('NaN in z: NonFiniteError naming z', () => {
    assertThrowsTyped(() => sparsek([1, NaN, 3], 1), NonFiniteError, 'z');
    assertThrowsTyped(() => sparsek([1, NaN, 3], 1, 'sort'), NonFiniteError, 'z');
    assertThrowsTyped(() => sparsekRows([1, 2, 3, -Infinity], 2, 1), NonFiniteError, 'z');
  });

  test('sparsekBackward with dp of another length: ShapeError naming dp', () => {
    assertThrowsTyped(() => sparsekBackward([0.5, 0.5], [1, 2, 3]), ShapeError, 'dp');
  });

  test('NonFiniteError reports the index and the value', () => {
    assert.throws(() => sparsek([1, 2, NaN], 1), (e: unknown) => {
      assert.ok(e instanceof NonFiniteError);
      assert.equal(e.index, 2);
      assert.ok(Number.isNaN(e.value));
      assert.match(e.message, /index 2/);
      return true;
    });
  });
});
