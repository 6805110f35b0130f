// The CUDA kernel sources, checked without a GPU: each KernelSource must define the extern "C"
// entry point its name promises (the runtime looks the function up by that name), with as many
// parameters as its `params` list (the launcher packs arguments by that list). A mismatch would
// otherwise surface only on the GPU machine, as CUDA_ERROR_NOT_FOUND or garbage arguments.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { KernelSource } from '../../src/cuda/runtime.js';
import { fsAnchorGrid, fsAnchorLaunches, fsAnchorSource, fsBlockSource, FS_ANCHOR_STRIDE, FS_ANCHOR_THREADS } from '../../src/cuda/kernels/selection-fast.js';
import { bwdPrepSource, bwdSelSource, bwdWinSource } from '../../src/cuda/kernels/attention-tc-backward.js';
import { fastForwardSource } from '../../src/cuda/kernels/attention-tc.js';
import { bwdSelWgSource, bwdWinWgSource } from '../../src/cuda/kernels/attention-wg-backward.js';
import { wgForwardSource } from '../../src/cuda/kernels/attention-wg.js';
import { attentionBackwardKeySource, attentionBackwardQuerySource, attentionForwardSource, scoreGradSource } from '../../src/cuda/kernels/attention.js';
import { baselineBackwardKeySource, baselineBackwardQuerySource, baselineForwardSource, qktopkSelectSource } from '../../src/cuda/kernels/baselines.js';
import { geluBackwardSource, geluForwardSource } from '../../src/cuda/kernels/activation.js';

/** The parameter list of `extern "C" __global__ void ... name(...)`, or null if there is no such function. */
function entryParams(source: string, name: string): string[] | null {
  const code = source.replace(/\/\/[^\n]*/g, ''); // comments may hold commas and unmatched brackets
  const m = new RegExp(`extern "C" __global__ void(?:\\s+__launch_bounds__\\([^)]*\\))?\\s+${name}\\(`).exec(code);
  if (m === null) return null;
  let depth = 1, at = m.index + m[0].length;
  const start = at;
  while (depth > 0 && at < code.length) {
    if (code[at] === '(') depth++;
    else if (code[at] === ')') depth--;
    at++;
  }
  const list = code.slice(start, at - 1).trim();
  return list === '' ? [] : list.split(',').map((p) => p.trim());
}

/** Every kernel source the project builds: the argument-free generators of every module, and the variants. */
async function allSources(): Promise<KernelSource[]> {
  const dir = join(import.meta.dirname, '../../src/cuda/kernels');
  const out: KernelSource[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.ts'))) {
    const mod = (await import(join(dir, file))) as Record<string, unknown>;
    for (const [key, fn] of Object.entries(mod)) {
      if (key.endsWith('Source') && typeof fn === 'function' && fn.length === 0) {
        const s = (fn as () => unknown)();
        if (typeof s === 'object' && s !== null && 'name' in s) out.push(s as KernelSource);
      }
    }
  }
  for (const AW of [1, 4] as const) out.push(fsAnchorSource(AW));
  for (const ALL of [false, true]) for (const PROBE of [false, true]) out.push(fsBlockSource({ ALL, PROBE }));
  for (const HS of [64, 128] as const) {
    for (const MINB of [0, 3]) for (const STORE of [false, true]) out.push(bwdSelSource({ HS, MINB, STORE }), bwdWinSource({ HS, MINB, STORE }));
    if (HS === 64) out.push(bwdSelSource({ HS, QB: 128 }));
    // the Hopper kernels as CudaBackend runs them, and the window kernel's staging before QSTAGE
    for (const QSTAGE of [false, true]) out.push(bwdWinWgSource({ HS, STAGES: 2, MINB: HS === 64 ? 3 : 0, ASYNCL: true, BULKQ: true, QSTAGE, SW: true }));
    // dQ a row a warp (CudaBackend's at HS 128), and its rows read ahead of their reductions (lab)
    for (const PRELOAD of [false, true]) out.push(bwdWinWgSource({ HS, STAGES: 2, MINB: HS === 64 ? 3 : 0, ASYNCL: true, BULKQ: true, QSTAGE: true, ROWQ: true, PRELOAD, SW: true }));
    out.push(bwdWinWgSource({ HS, ASYNCL: true, BULKQ: true, QSTAGE: true, SW: true, KB: 128 })); // the lab's two-warpgroup form
    out.push(bwdWinWgSource({ HS, STAGES: 2, ASYNCL: true, BULKQ: true, QSTAGE: true, ROWQ: true, OWNQ: true, SW: true })); // stores the dq tiles it owns
    for (const KVROWS of [false, true]) out.push(bwdSelWgSource(HS === 64 ? { HS, QB: 256, KVROWS } : { HS, KVROWS }));
    out.push(bwdSelWgSource(HS === 64 ? { HS, QB: 256, KVROWS: true, QROWS: true } : { HS, KVROWS: true, QROWS: true })); // lab: dq a row a warp
    out.push(bwdSelWgSource(HS === 64 ? { HS, QB: 256, KVROWS: true, NARROW: true } : { HS, KVROWS: true, NARROW: true })); // lab: narrow candidate tiles
    // CudaBackend's at HS 128, and the lab's narrow tiles added a row a warp with rows read ahead of their reductions
    for (const more of [{}, { NROWS: true, PRELOAD: true }]) out.push(bwdSelWgSource({ HS, ...(HS === 64 ? { QB: 256 as const } : {}), KVROWS: true, QROWS: true, NARROW: true, ...more }));
    for (const OUT of ['bf16', 'f32'] as const) {
      for (const MASK of ['key', 'rows'] as const) {
        out.push(fastForwardSource({ HS, BQ: 64, OUT, META: 'all', STAGES: 2, FASTEXP: true, MINB: 4, MASK }));
      }
      out.push(fastForwardSource({ HS, BQ: 128, WM: 2, OUT, META: 'all', STAGES: 2, FASTEXP: true, MASK: 'rows' }));
      // the Hopper forward as CudaBackend runs it, and one warpgroup
      out.push(wgForwardSource(HS === 64 ? { HS, OUT, NC: 2, STAGES: 4, MINB: 2 } : { HS, OUT, NC: 3, STAGES: 4, LAG: 2 }), wgForwardSource({ HS, OUT, NC: 1, STAGES: 4 }));
      if (HS === 128) out.push(wgForwardSource({ HS, OUT, NC: 3, STAGES: 3 })); // refilled one tile behind
      if (HS === 64) out.push(wgForwardSource({ HS, OUT, NC: 4, STAGES: 4 })); // the lab's 256-query blocks (9-bit row ranges)
      if (HS === 64) out.push(wgForwardSource({ HS, OUT, NC: 2, STAGES: 4, MINB: 2, GH: 2 })); // GQA: two heads a block
      out.push(bwdPrepSource(OUT, HS));
    }
  }
  for (const SEL of [false, true]) {
    const o = { HS: 64, VEC: 4 as const, SEL };
    out.push(attentionForwardSource(o), attentionBackwardQuerySource(o), attentionBackwardKeySource(o));
  }
  out.push(scoreGradSource('slots'), scoreGradSource('sums'), qktopkSelectSource(64));
  for (const kind of ['fixed', 'hash', 'qktopk'] as const) {
    out.push(baselineForwardSource(kind, 64), baselineBackwardQuerySource(kind, 64), baselineBackwardKeySource(kind, 64));
  }
  for (const form of ['tanh', 'erf'] as const) out.push(geluForwardSource({ form }), geluBackwardSource({ form }));
  return out;
}

test('every CUDA kernel source defines the entry point its name promises, with its parameter count', async () => {
  const sources = await allSources();
  assert.ok(sources.length >= 60, `found ${sources.length} kernel sources`);
  for (const s of sources) {
    const params = entryParams(s.source, s.name);
    assert.ok(params !== null, `${s.name}: no extern "C" __global__ function of that name in its source`);
    assert.equal(params.length, s.params.length, `${s.name}: ${params.length} parameters in the source, ${s.params.length} in params`);
  }
});

test('the entry-point check fails on a misnamed kernel and on a missing parameter', () => {
  const src = 'extern "C" __global__ void __launch_bounds__(128, 2) k_a(float* x, // a comment, with a comma) and [0, n)\n int n) {}';
  assert.deepEqual(entryParams(src, 'k_a'), ['float* x', 'int n']);
  assert.equal(entryParams(src, 'k_b'), null);
  assert.equal(entryParams(src, 'k'), null);
});

test('the selection anchors: one phase within a wave of warps or with K = 0, else two whose grids cover every anchor', () => {
  const SMS = 132, warpsPerBlock = FS_ANCHOR_THREADS / 32;
  // 16 rows at T = 4K (nb = 64) fit a wave; at 64K (nb = 1024) they take two phases
  assert.deepEqual(fsAnchorLaunches(16, 64, 512, SMS).map((l) => l.phase), [0]);
  assert.deepEqual(fsAnchorLaunches(16, 1024, 0, SMS).map((l) => l.phase), [0]);
  assert.deepEqual(fsAnchorLaunches(16, 20, 512, 0).map((l) => l.phase), [0]); // a row of <= 2 strides
  const two = fsAnchorLaunches(16, 1024, 512, SMS);
  assert.deepEqual(two.map((l) => l.phase), [1, 2]);
  // phase 1: every stride-th anchor and the last of each row (nb = 1024: b = 0, 16, ..., 1024)
  const first = 16 * (1024 / FS_ANCHOR_STRIDE + 1);
  assert.equal(two[0].grid, fsAnchorGrid(first, two[0].AW));
  // phase 2's grid spans every anchor of every row (its warps skip phase 1's)
  assert.ok(two[1].grid * warpsPerBlock >= 16 * 1025 * two[1].AW, 'phase 2 covers every anchor');
  // nb not a multiple of the stride: the last anchor is a phase-1 anchor of its own
  const odd = fsAnchorLaunches(16, 1000, 512, SMS);
  assert.equal(odd[0].grid, fsAnchorGrid(16 * (Math.floor(1000 / FS_ANCHOR_STRIDE) + 2), odd[0].AW));
});

test('the Hopper forward refuses stage counts that would leave tile t + 1 uncopied at iteration t', () => {
  assert.throws(() => wgForwardSource({ HS: 64, OUT: 'f32', NC: 2, STAGES: 3, LAG: 2 }), /STAGES - LAG must be at least 2/);
  assert.throws(() => wgForwardSource({ HS: 64, OUT: 'f32', NC: 2, STAGES: 2 as 3 }), /STAGES must be at least 3/);
  const ok = wgForwardSource({ HS: 128, OUT: 'f32', NC: 3, STAGES: 4, LAG: 2 });
  assert.match(ok.name, /_s4_lag2$/);
  assert.match(ok.source, /#define LAG 2/);
});
