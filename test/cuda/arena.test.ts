// The CUDA runtime's caching arena (src/cuda/runtime.ts, Arena) over a fake driver, so it runs without
// a GPU: immediate reuse of freed blocks, and frees held while work on a second stream may still read
// them (CudaRuntime.concurrently).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Arena } from '../../src/cuda/runtime.js';
import { DeviceError } from '../../src/core/errors.js';

function fakeArena(): { arena: Arena; allocs: bigint[] } {
  const allocs: bigint[] = [];
  let next = 0x1000n;
  const arena = new Arena((bytes) => {
    const p = next;
    next += BigInt(bytes);
    allocs.push(p);
    return p;
  }, () => {});
  return { arena, allocs };
}

test('arena: a freed block is handed out again to the next request of its size', () => {
  const { arena, allocs } = fakeArena();
  const a = arena.take(1000);
  arena.give(a);
  assert.equal(arena.take(1000).ptr, a.ptr);
  assert.equal(allocs.length, 1);
});

test('arena: frees held by hold() are not reused until release()', () => {
  const { arena, allocs } = fakeArena();
  const a = arena.take(1000);
  arena.hold();
  arena.give(a);
  const b = arena.take(1000);
  assert.notEqual(b.ptr, a.ptr, 'a held block must not be handed out');
  assert.equal(allocs.length, 2);
  assert.equal(arena.counters().inUseCount, 2, 'a held block still counts as in use');
  assert.throws(() => arena.give(a), DeviceError, 'freed twice while held');
  assert.throws(() => arena.give({ ptr: 0xdeadn, bytes: 8 }), DeviceError, 'never allocated');
  arena.release();
  assert.equal(arena.take(1000).ptr, a.ptr, 'released, it is reused');
});
