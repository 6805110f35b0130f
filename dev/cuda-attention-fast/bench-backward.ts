// Harness for the tiled tensor-core SparseK backward (src/cuda/kernels/attention-tc-backward.ts): emulation, validation, timing.
//
//   node --import tsx dev/cuda-attention-fast/bench-backward.ts [--T 4096,16384,65536] [--NH 16] [--NKV 16]
//        [--HS 64,128] [--K 512] [--W 512] [--repeats 20] [--skip-validate] [--skip-emulate] [--no-prod]
//        [--variants 64:f:0,128:f:0,...]   HS:exp:MINB[:flags] (e exp2f, f ex2.approx; flags: s reductions
//        as plain stores, a timing probe whose results are wrong; q sel with 128 queries a block (QB, HS 64);
//        w win on wgmma (attention-wg-backward.ts, sm_90a; w3: three Q/dO stages; l: its lse and D by cp.async);
//        b its dQ by bulk reductions (BULKQ; y: staged in the Q/dO stage just used, QSTAGE; u: with y, added
//        a whole row a warp by red.global.add.v4 instead, ROWQ); z wgmma tiles
//        128-byte swizzled (SW); k: 128 keys a block, two warpgroups (KB 128, with l, b, y, z); g sel on
//        wgmma (spk_bwd_sel_wg,
//        two warpgroups, 128 queries a block; g2: MINB 2; x: 256 queries a block; v: its dK and dV staged
//        and added a whole row a warp (KVROWS); h: with v, its dq too (QROWS); m: a candidate tile of at
//        most 16 keys taken transposed (NARROW); p: with u or v, staged rows read four at a time ahead of
//        their reductions (PRELOAD, both kernels); r: with m and v, NARROW's dK and dV staged as key rows and
//        added a whole row a warp (NROWS); timing probes whose
//        results are wrong: n, no dK and dV reductions; c, K and V rows copied from consecutive keys instead
//        of gathered; d, no dQ reductions in the wgmma win kernel))
//        [--dump DIR]
//
// 1. emulate (no GPU): the three kernels' decomposition in float64 TypeScript — win's key blocks (64, and
//    128 with KB 128's per-warpgroup tile skipping) and query tiles with its band mask and whole-tile
//    rule, sel's key set (Sel_{i0} then the new
//    candidates some block row selects) and each key's block rows [lo, hi) as sel finds them (checked
//    against the direct thk mask), for 64, 128 and 256 queries a block, the slot index off_j + i - j - W,
//    the mean's F test — followed by
//    a port of sparsek_mean_prefix / sparsek_score_grad. Checked against the float64 CPU backward
//    (src/cpu/kernels/attention.ts: patternAttentionBackward's dq, dk, dv and gate gradients,
//    sparsekAttentionBackwardInto's du): every attended pair exactly once, every slot written once
//    per head, results equal to 1e-6 (the gates are fp32, as in the kernel; the reference's are float64).
// 2. validate (GPU): selection (existing kernels), the lab forward (kernel.ts) for out and lse, then
//    prep, win, sel and the existing du kernels; dq, dk, dv, du and the dg slots against the float64
//    reference on bf16-rounded q, k, v, dout, next to a naive same-precision backward (bf16 tensors
//    between ops, fp32 accumulation; see naiveBackward). Pass: kernel error <= 2x naive error.
// 3. time (GPU): median CUDA-event ms of prep, win, sel, the du kernels, and the production fp32
//    backward (attention.ts) on the same inputs; TFLOP/s counts 10 HS FLOP per attended pair (5
//    products of 2 HS FLOP: S, dP, dV, dK, dQ) on the exact pair count.
// Output: one JSON object per line for every validation check and timing; '#' lines are notes.
// --dump DIR writes every kernel's .cu for nvcc -arch=sm_90 -std=c++17 -cubin --ptxas-options=-v.

import { mkdirSync, writeFileSync } from 'node:fs';
import { cudaAvailability } from '../../src/cuda/runtime.js';
import type { CudaRuntime, DeviceBlock, Kernel, KernelSource } from '../../src/cuda/runtime.js';
import { keyIntervalsSource } from '../../src/cuda/kernels/selection.js';
import { selectGlobalSource, selectSharedSource, SELECT_BQ } from '../cuda-attention/selection-tiles.js';
import {
  attentionBackwardKeySource, attentionBackwardQuerySource, keyOffsetsSource, meanChunks, meanChunksSource, meanPrefixSource, scoreGradLaunch, scoreGradSource, ATTENTION_WARPS, MEAN_THREADS, PREFIX_BLOCK,
} from '../../src/cuda/kernels/attention.js';
import { patternAttentionBackward, patternAttentionForward, planSparsek, sparsekAttentionBackwardInto, sparsekPattern } from '../../src/cpu/kernels/attention.js';
import type { SparsekPlan } from '../../src/cpu/kernels/attention.js';
import type { AttentionShape } from '../../src/core/check.js';
import { fastForwardShared, fastForwardSource } from '../../src/cuda/kernels/attention-tc.js';
import { compactRows } from './rows.js';
import type { FastForwardVariant } from '../../src/cuda/kernels/attention-tc.js';
import { bitsOf, bf16, cases as sharedCases, deviceHelpers, normal, scoresOf, toBf16 } from './harness.js';
import type { Case } from './harness.js';
import {
  BT, BWD_THREADS, bwdPrepGrid, bwdPrepSource, bwdSelBlocks, bwdSelName, bwdSelShared, bwdSelSource, bwdWinName, bwdWinShared, bwdWinSource,
} from '../../src/cuda/kernels/attention-tc-backward.js';
import type { BackwardVariant } from '../../src/cuda/kernels/attention-tc-backward.js';
import {
  BWD_SEL_WG_THREADS, bwdSelWgBlocks, bwdSelWgName, bwdSelWgShared, bwdSelWgSource, bwdWinWgBlocks, bwdWinWgName, bwdWinWgShared, bwdWinWgSource, bwdWinWgThreads,
} from '../../src/cuda/kernels/attention-wg-backward.js';
import type { WgSelVariant, WgWindowVariant } from '../../src/cuda/kernels/attention-wg-backward.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : dflt);
const Ts = opt('T', '4096,16384,65536').split(',').map(Number);
const NHt = Number(opt('NH', '16')), NKVt = Number(opt('NKV', '16'));
const HSs = opt('HS', '64,128').split(',').map(Number);
const Kt = Number(opt('K', '512')), Wt = Number(opt('W', '512')), repeats = Number(opt('repeats', '20'));
/** A lab variant: the production kernels' options, and the window (wg) and selected-pairs (sg) kernels on wgmma or mma.sync. */
type LabVariant = BackwardVariant & { wg?: WgWindowVariant; sg?: WgSelVariant; NORED?: boolean; NOGATHER?: boolean; NODQ?: boolean };
const variants: LabVariant[] = opt('variants', '64:f:0,64:f:3,128:f:0').split(',').map((s) => {
  const [hs, ex, mb, flags = ''] = s.split(':');
  const HS = Number(hs) as 64 | 128, w = /w(\d?)/.exec(flags), g = /g(\d?)/.exec(flags);
  return {
    HS, FASTEXP: ex !== 'e', MINB: Number(mb ?? 0), STORE: flags.includes('s'),
    QB: flags.includes('q') ? 128 : 64,
    ...(w ? { wg: { HS, STAGES: w[1] === '3' ? 3 : 2, MINB: HS === 64 && !flags.includes('k') ? 3 : 0, ASYNCL: flags.includes('l'), BULKQ: flags.includes('b'), QSTAGE: flags.includes('y'), ROWQ: flags.includes('u'), PRELOAD: flags.includes('p') && flags.includes('u'), SW: flags.includes('z'), KB: flags.includes('k') ? 128 : 64 } as WgWindowVariant } : {}),
    ...(g ? { sg: { HS, MINB: Number(g[1] || 0), QB: flags.includes('x') ? 256 : 128, KVROWS: flags.includes('v'), QROWS: flags.includes('h'), NARROW: flags.includes('m'), NROWS: flags.includes('r') && flags.includes('m') && flags.includes('v'), PRELOAD: flags.includes('p') && flags.includes('v') } as WgSelVariant } : {}),
    NORED: flags.includes('n'), NOGATHER: flags.includes('c'), NODQ: flags.includes('d'),
  };
});
const vname = (v: LabVariant): string => (v.sg ? selSource(v).name.replace('spk_bwd_', '') : bwdSelName(v).replace('spk_bwd_sel_', ''))
  + (v.wg ? `_${winSource(v).name.replace('spk_bwd_', '')}` : '');
const winSource = (v: LabVariant): KernelSource => {
  const s = v.wg ? bwdWinWgSource(v.wg) : bwdWinSource(v);
  if (!v.NODQ || !v.wg) return s;
  // timing probe (flag d, wgmma win only), whose results are wrong: no dQ reductions
  const name = `${s.name}_nodq`;
  return { ...s, name, source: s.source.replaceAll(s.name, name).replace(/bulk_add_f32\(dq|red2\(dst/g, (m) => `if (0) ${m}`) };
};
const selSource = (v: LabVariant): KernelSource => {
  const s = v.sg ? bwdSelWgSource(v.sg) : bwdSelSource(v);
  if (!v.NORED && !v.NOGATHER) return s;
  // timing probes (wgmma sel only), whose results are wrong; the name says which: n, no dK / dV reductions;
  // c, K / V tiles copied from consecutive rows (t BT + row) instead of the gathered key rows
  const name = `${s.name}${v.NORED ? '_nored' : ''}${v.NOGATHER ? '_nogather' : ''}`;
  let src = s.source.replaceAll(s.name, name);
  if (v.NORED) src = src.replace(/red2\(row/g, (m) => `if (0) ${m}`);
  if (v.NOGATHER) src = src.replace('const int j = mpos[t * BT + COPY_ROW(x)];', 'const int j = mpos[t * BT + COPY_ROW(x)] >= 0 ? t * BT + COPY_ROW(x) : -1;');
  return { ...s, name, source: src };
};
const emit = (o: Record<string, unknown>): void => console.log(JSON.stringify(o));

if (args.includes('--dump')) {
  const dir = opt('dump', '/tmp/spk-bwd-cu');
  mkdirSync(dir, { recursive: true });
  const srcs: KernelSource[] = [bwdPrepSource('bf16', 64), bwdPrepSource('f32', 64)];
  for (const v of variants) srcs.push(winSource(v), selSource(v));
  for (const s of srcs) writeFileSync(`${dir}/${s.name}.cu`, s.source);
  console.log(`# wrote ${srcs.length} kernels to ${dir}`);
  process.exit();
}

// ---- inputs, bf16 rounding, the shared cases: harness.ts ---------------------------------------
const fr = Math.fround;

const cases: Case[] = [
  ...sharedCases,
  // W = 63 and 2 (mod 64): the edges of win's whole-tile rule and of its query-tile count
  { name: 'W=127', shape: { B: 1, T: 611, NH: 2, NKV: 1, HS: 64 }, K: 40, W: 127, u: 'normal' },
  { name: 'W=130', shape: { B: 1, T: 611, NH: 1, NKV: 1, HS: 64 }, K: 70, W: 130, u: 'normal' },
  // late blocks with 1 to 16 new candidates (13 of 16 blocks a row in a streaming simulation): NARROW's tile
  { name: 'few candidates HS=128', shape: { B: 1, T: 2048, NH: 2, NKV: 1, HS: 128 }, K: 64, W: 64, u: 'normal' },
];
function caseInputs(c: Case) {
  const { B, T, NH, NKV, HS } = c.shape;
  const nq = B * NH * T * HS, nkv = B * NKV * T * HS;
  return { q: toBf16(normal(nq, 1)), k: toBf16(normal(nkv, 2)), v: toBf16(normal(nkv, 3)), u: scoresOf(c, 5), dout: toBf16(normal(nq, 4)) };
}

// ---- selection data as the device kernels hold it, from the CPU plan ---------------------------
type Key = [number, number]; // (u, j); the selection's order
const ordKey = (u: number, j: number): Key => [fr(u) === 0 ? 0 : fr(u), j];
const geKey = (a: Key, b: Key): boolean => a[0] > b[0] || (a[0] === b[0] && a[1] >= b[1]);

interface SelData {
  thk: (Key | null)[][];   // [bh][i]: Sel_i's weakest key; null: every candidate selected (device 0)
  e: Int32Array[];         // [bh][j]: key j is attended by queries [j, e_j)
  off: Int32Array[];       // [bh][j]: first slot of j (T + 1 entries)
  nfree: Int32Array[];     // [bh][i]: |F_i|
}
function selData(plan: SparsekPlan, BH: number): SelData {
  const { T, K, W } = plan;
  const out: SelData = { thk: [], e: [], off: [], nfree: [] };
  for (let bh = 0; bh < BH; bh++) {
    const f = plan.sel[bh], ub = bh * T;
    const thk: (Key | null)[] = [];
    const nfree = new Int32Array(T);
    for (let i = 0; i < T; i++) {
      const nCand = Math.max(0, i - W + 1);
      if (f.count[i] >= nCand) thk.push(null);
      else {
        let best: Key = [Infinity, 0];
        for (let c = 0; c < f.count[i]; c++) {
          const j = f.sel[i * K + c], key = ordKey(plan.u[ub + j] as number, j);
          if (geKey(best, key)) best = key;
        }
        thk.push(best);
      }
      const t = f.tau[i];
      for (let j = 0; j < nCand; j++) { const uj = plan.u[ub + j] as number; if (uj > t && uj - t < 1) nfree[i]++; }
    }
    // sparsek_key_intervals: first i >= j + W with thk_i > key_j (thk never decreases)
    const e = new Int32Array(T), off = new Int32Array(T + 1);
    for (let j = 0; j < T; j++) {
      const kj = ordKey(plan.u[ub + j] as number, j);
      let lo = Math.min(T, j + W), hi = T;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (thk[mid] !== null && !geKey(kj, thk[mid]!)) hi = mid; else lo = mid + 1;
      }
      e[j] = lo;
      off[j + 1] = off[j] + Math.max(0, e[j] - (j + W));
    }
    out.thk.push(thk); out.e.push(e); out.off.push(off); out.nfree.push(nfree);
  }
  return out;
}

/** sparsek_mean_prefix + sparsek_score_grad, ported: du (B NKV T) from slots and mean. */
function scoreGrad(u: ArrayLike<number>, plan: SparsekPlan, sd: SelData, dgk: Float64Array[], mean: Float64Array[], BH: number): Float64Array {
  const { T, K, W } = plan;
  const du = new Float64Array(BH * T);
  if (K === 0) return du;
  for (let bh = 0; bh < BH; bh++) {
    const ta = plan.sel[bh].tau, P = new Float64Array(T + 1);
    for (let i = 0; i < T; i++) P[i + 1] = P[i] + mean[bh][i];
    for (let j = 0; j < T; j++) {
      const start = j + W;
      if (start >= T) continue;
      const uj = u[bh * T + j];
      let lo = 0, hi = T;
      while (lo < hi) { const m = (lo + hi) >> 1; if (uj - ta[m] < 1) hi = m; else lo = m + 1; }
      const a = Math.max(start, lo);
      lo = 0; hi = T;
      while (lo < hi) { const m = (lo + hi) >> 1; if (!(uj > ta[m])) hi = m; else lo = m + 1; }
      const en = lo;
      if (en > a) {
        const stop = Math.min(en, sd.e[bh][j]);
        let direct = 0;
        for (let i = a; i < stop; i++) direct += dgk[bh][sd.off[bh][j] + i - start];
        du[bh * T + j] = direct - (P[en] - P[a]);
      }
    }
  }
  return du;
}

interface Grads { dq: Float64Array; dk: Float64Array; dv: Float64Array; du: Float64Array; dgk: Float64Array[]; mean?: Float64Array[] }

/** float64 reference: the CPU backward, plus its gate gradients placed in the slot layout. */
function reference(x: ReturnType<typeof caseInputs>, c: Case, plan: SparsekPlan, sd: SelData): Grads {
  const { B, T, NH, NKV, HS } = c.shape, { K, W } = c, G = NH / NKV;
  const dq = new Float64Array(B * NH * T * HS), dk = new Float64Array(B * NKV * T * HS), dv = new Float64Array(dk.length);
  const du = new Float64Array(B * NKV * T);
  sparsekAttentionBackwardInto(dq, dk, dv, du, x.dout, x, c.shape, { k: K, window: W }, plan);
  const dgk = Array.from({ length: B * NKV }, (_, bh) => new Float64Array(Math.max(1, sd.off[bh][T])));
  const pattern = sparsekPattern(plan, NKV);
  const t1 = new Float64Array(dq.length), t2 = new Float64Array(dk.length), t3 = new Float64Array(dk.length);
  patternAttentionBackward(t1, t2, t3, x.dout, x, c.shape, pattern, (b, hq, i, n, dg) => {
    const bh = b * NKV + Math.floor(hq / G), f = plan.sel[bh], nWin = n - f.count[i];
    for (let cc = 0; cc < f.count[i]; cc++) {
      const j = f.sel[i * K + cc];
      dgk[bh][sd.off[bh][j] + i - j - W] += dg[nWin + cc];
    }
  });
  return { dq, dk, dv, du, dgk };
}

/** The forward in float64 for the emulation: out and natural-log lse. */
function forward64(x: ReturnType<typeof caseInputs>, c: Case, plan: SparsekPlan) {
  const { B, T, NH, NKV, HS } = c.shape;
  const out = new Float64Array(B * NH * T * HS), lse = new Float64Array(B * NH * T);
  const pattern = sparsekPattern(plan, NKV);
  patternAttentionForward(out, x, c.shape, pattern);
  const cols = new Int32Array(Math.max(1, pattern.maxKeys)), gates = new Float64Array(cols.length), sc = 1 / Math.sqrt(HS);
  for (let b = 0; b < B; b++) for (let hq = 0; hq < NH; hq++) {
    const h = Math.floor(hq / (NH / NKV)), kv = (b * NKV + h) * T * HS;
    for (let i = 0; i < T; i++) {
      const n = pattern.row(b, h, i, cols, gates), qi = ((b * NH + hq) * T + i) * HS;
      const s = Array.from(cols.subarray(0, n), (j) => { let d = 0; for (let e = 0; e < HS; e++) d += x.q[qi + e] * x.k[kv + j * HS + e]; return d * sc; });
      const m = Math.max(...s);
      lse[(b * NH + hq) * T + i] = n > 0 ? m + Math.log(s.reduce((a, y) => a + Math.exp(y - m), 0)) : -Infinity;
    }
  }
  return { out, lse };
}

// ---- 1. emulation of the kernels' decomposition ------------------------------------------------
/** Blocks (and heads' rows) whose candidate slots number 1 to 16, the tiles NARROW takes transposed: counted by emulate(). */
let narrowBlocks = 0;

function emulate(c: Case, x: ReturnType<typeof caseInputs>, plan: SparsekPlan, sd: SelData, ref: Grads, QB: 64 | 128 | 256, KB: 64 | 128): string | null {
  const { B, T, NH, NKV, HS } = c.shape, { K, W } = c, G = NH / NKV, scale = 1 / Math.sqrt(HS);
  const { out, lse } = forward64(x, c, plan);
  const D = new Float64Array(B * NH * T);
  for (let r = 0; r < B * NH * T; r++) { let d = 0; for (let e = 0; e < HS; e++) d += x.dout[r * HS + e] * out[r * HS + e]; D[r] = d; }
  const dq = new Float64Array(B * NH * T * HS), dk = new Float64Array(B * NKV * T * HS), dv = new Float64Array(dk.length);
  const pairs = new Int32Array(B * NH * T);
  const dot = (a: ArrayLike<number>, ao: number, b: ArrayLike<number>, bo: number): number => { let d = 0; for (let e = 0; e < HS; e++) d += a[ao + e] * b[bo + e]; return d; };
  // one attended pair (i, j) of head hq with gate g: the shared FA2 step; returns p and dov
  const step = (b: number, hq: number, i: number, j: number, g: number): [number, number] => {
    const h = Math.floor(hq / G), row = (b * NH + hq) * T + i, kvr = (b * NKV + h) * T + j;
    const p = Math.exp(scale * dot(x.q, row * HS, x.k, kvr * HS) - lse[row]);
    const dov = dot(x.dout, row * HS, x.v, kvr * HS);
    const ds = p * (g * dov - D[row]);
    for (let e = 0; e < HS; e++) {
      dv[kvr * HS + e] += p * g * x.dout[row * HS + e];
      dk[kvr * HS + e] += scale * ds * x.q[row * HS + e];
      dq[row * HS + e] += scale * ds * x.k[kvr * HS + e];
    }
    pairs[row]++;
    return [p, dov];
  };
  // spk_bwd_win: blocks of KB keys (KB 128: a warpgroup per 64, skipping the query tiles where its keys
  // have no pair, as spk_bwd_win2_wg decides it)
  for (let b = 0; b < B; b++) for (let h = 0; h < NKV; h++) for (let j0 = 0; j0 < T; j0 += KB) {
    const nQT = Math.min(W > 0 ? Math.ceil((W + KB - 1) / BT) : 0, Math.ceil((T - j0) / BT));
    for (let gi = 0; gi < G; gi++) for (let t = 0; t < nQT; t++) {
      const qa = j0 + t * BT;
      const rel = [qa + BT - 1 >= j0 && qa - j0 - (BT - 1) < W, j0 + BT < T && qa + BT - 1 >= j0 + BT && qa - j0 - (2 * BT - 1) < W];
      if (KB === 128 && !rel[0] && !rel[1]) return `win: tile ${qa} of keys ${j0} taken by neither warpgroup`;
      for (let w = 0; w < KB / BT; w++) {
        const jw = j0 + w * BT;
        const whole = qa >= jw + BT - 1 && qa + BT - 1 - jw < W && qa + BT <= T;
        for (let r = 0; r < BT; r++) for (let cq = 0; cq < BT; cq++) {
          const j = jw + r, i = qa + cq, d = i - j;
          if (!(whole || (d >= 0 && d < W && i < T))) continue;
          if (j >= T || i >= T || d < 0 || d >= W) return `win: pair (${i}, ${j}) is not a window pair`;
          if (KB === 128 && !rel[w]) return `win: warpgroup ${w} skips tile ${qa} of keys ${j0}, which has pair (${i}, ${j})`;
          step(b, h * G + gi, i, j, 1);
        }
      }
    }
  }
  // spk_bwd_sel
  const dgk = Array.from({ length: B * NKV }, (_, bh) => new Float64Array(Math.max(1, sd.off[bh][T])));
  const mean = Array.from({ length: B * NKV }, () => new Float64Array(T));
  for (let b = 0; b < B; b++) for (let h = 0; h < NKV; h++) {
    const bh = b * NKV + h, f = plan.sel[bh], ub = bh * T, off = sd.off[bh];
    for (let i0 = 0; i0 < T; i0 += QB) {
      const nsel = K > 0 ? f.count[i0] : 0;
      const rlo = Math.max(0, i0 - W + 1), rhi = K > 0 ? Math.min(T, i0 + QB - W) : 0;
      const nselT = Math.ceil(nsel / BT), ncap = nselT + Math.ceil(Math.max(0, rhi - rlo) / BT);
      if (ncap > Math.ceil(K / BT) + QB / BT) return `sel: block ${i0} has room for ${ncap} key tiles, more than the kernels' shared memory`;
      // each key's block rows [lo, hi) as the kernel finds them: the search of the block's thk (rows
      // past T select nothing), and a new candidate's rows from j + W - i0
      const rowsOf = (j: number, from: number): [number, number] => {
        const key = ordKey(x.u[ub + j], j);
        let a = 0, z: number = QB;
        while (a < z) {
          const mid = (a + z) >> 1, th = sd.thk[bh][i0 + mid];
          if (i0 + mid < T && (th === null || geKey(key, th))) a = mid + 1;
          else z = mid;
        }
        return [from, a];
      };
      // selKeySet's slots: Sel_{i0}, then only the new candidates some block row selects (lo < hi), in order
      const slots: [number, number, number][] = [];
      for (let y = 0; y < nselT * BT; y++) slots.push(y < nsel ? [f.sel[i0 * K + y], ...rowsOf(f.sel[i0 * K + y], 0)] : [-1, 0, 0]);
      for (let j = rlo; j < rhi; j++) {
        const [l, h2] = rowsOf(j, Math.min(QB, Math.max(0, j + W - i0)));
        if (l < h2) slots.push([j, l, h2]);
      }
      const nT = Math.ceil(slots.length / BT), ncand = slots.length - nselT * BT;
      if (ncand >= 1 && ncand <= 16) narrowBlocks++;
      while (slots.length < nT * BT) slots.push([-1, 0, 0]);
      const pos = Int32Array.from(slots, (e) => e[0]), lo = Int32Array.from(slots, (e) => e[1]), hi = Int32Array.from(slots, (e) => e[2]);
      const num = new Float64Array(QB);
      for (let gi = 0; gi < G && nT > 0; gi++) {
        const written = new Map<number, number>();
        for (let t = 0; t < nT; t++) for (let r = 0; r < BT; r++) for (let cq = 0; cq < QB; cq++) {
          const y = t * BT + r, j = pos[y], i = i0 + cq;
          if (j < 0 || i >= T) continue;
          const key = ordKey(x.u[ub + j], j), th = sd.thk[bh][i];
          const selected = th === null || geKey(key, th);
          const attended = selected && (t < nselT || j <= i - W);
          if (attended !== (cq >= lo[y] && cq < hi[y])) return `sel: key ${j}'s block rows [${lo[y]}, ${hi[y]}) disagree with the mask at query ${i}`;
          if (!attended) continue;
          const tf = fr(f.tau[i]), g = Math.min(1, Math.max(0, fr(fr(x.u[ub + j]) - tf)));
          const [p, dov] = step(b, h * G + gi, i, j, g);
          const slot = off[j] - W + i - j;
          if (slot < off[j] || slot >= off[j + 1]) return `sel: slot of (${i}, ${j}) outside key ${j}'s slots`;
          if (written.has(slot)) return `sel: slot of (${i}, ${j}) written twice`;
          written.set(slot, 1);
          dgk[bh][slot] = gi === 0 ? p * dov : dgk[bh][slot] + p * dov;
          const ud = x.u[ub + j], td = f.tau[i];
          if (ud > td && ud - td < 1) num[cq] += p * dov;
        }
        const selects = f.count.slice(i0, Math.min(T, i0 + QB)).reduce((a, y) => a + y, 0);
        if (written.size !== selects) return `sel: block ${i0} wrote ${written.size} slots, its queries select ${selects} keys`;
      }
      for (let cq = 0; cq < QB && i0 + cq < T; cq++) { const nf = sd.nfree[bh][i0 + cq]; mean[bh][i0 + cq] = nf > 0 ? num[cq] / nf : 0; }
    }
  }
  // coverage: every row got exactly its pattern's number of pairs
  const pattern = sparsekPattern(plan, NKV), cols = new Int32Array(Math.max(1, pattern.maxKeys)), gates = new Float64Array(cols.length);
  for (let b = 0; b < B; b++) for (let hq = 0; hq < NH; hq++) for (let i = 0; i < T; i++) {
    const n = pattern.row(b, Math.floor(hq / G), i, cols, gates);
    if (pairs[(b * NH + hq) * T + i] !== n) return `head ${hq} query ${i}: ${pairs[(b * NH + hq) * T + i]} pairs, reference ${n}`;
  }
  const du = scoreGrad(x.u, plan, sd, dgk, mean, B * NKV);
  const got: Grads = { dq, dk, dv, du, dgk };
  for (const name of ['dq', 'dk', 'dv', 'du'] as const) {
    const e = errors(got[name], ref[name]);
    if (!(e.max < 1e-6)) return `${name}: max rel error ${e.max.toExponential(2)}`;
  }
  for (let bh = 0; bh < B * NKV; bh++) {
    const e = errors(dgk[bh], ref.dgk[bh]);
    if (!(e.max < 1e-6)) return `dg slots of row ${bh}: max rel error ${e.max.toExponential(2)}`;
  }
  return null;
}

function errors(got: ArrayLike<number>, want: ArrayLike<number>): { max: number; rms: number } {
  let scale = 0, worst = 0, se = 0, sr = 0, n = 0;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]));
    const d = Math.abs(got[i] - want[i]);
    worst = Math.max(worst, Number.isNaN(d) ? Infinity : d);
    se += d * d; sr += want[i] * want[i]; n++;
  }
  return { max: scale > 0 ? worst / scale : worst, rms: sr > 0 ? Math.sqrt(se / sr) : Math.sqrt(se / Math.max(1, n)) };
}

const prepared = new Map<string, { x: ReturnType<typeof caseInputs>; plan: SparsekPlan; sd: SelData; ref: Grads }>();
function prepare(c: Case) {
  let p = prepared.get(c.name);
  if (p === undefined) {
    const x = caseInputs(c);
    const plan = planSparsek(x.u, c.shape, { k: c.K, window: c.W });
    const sd = selData(plan, c.shape.B * c.shape.NKV);
    p = { x, plan, sd, ref: reference(x, c, plan, sd) };
    prepared.set(c.name, p);
  }
  return p;
}

if (!args.includes('--skip-emulate')) {
  const t0 = performance.now();
  let bad = 0;
  for (const c of cases) {
    const p = prepare(c);
    for (const [QB, KB] of [[64, 64], [128, 128], [256, 64]] as const) {
      const t1 = performance.now();
      narrowBlocks = 0;
      const err = emulate(c, p.x, p.plan, p.sd, p.ref, QB, KB);
      emit({ kind: 'emulate', case: c.name, QB, KB, ok: err === null, error: err ?? undefined, narrow_blocks: narrowBlocks, s: +((performance.now() - t1) / 1000).toFixed(1) });
      if (err !== null) bad++;
    }
  }
  console.log(`# emulate: win (64 and 128 keys a block) + sel (64, 128 and 256 queries a block) decomposition of ${cases.length} cases ${bad === 0 ? 'matches the float64 CPU backward (dq, dk, dv, du, dg slots)' : 'FAILED'} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  if (bad > 0) process.exitCode = 1;
}

const avail = cudaAvailability();
if (!avail.available) {
  console.log(`# no CUDA device (${avail.reason}): ran the emulation only`);
  process.exit();
}
const rt: CudaRuntime = avail.runtime;
console.log(`# ${rt.name} (${rt.arch}), ${rt.multiprocessors} SMs, driver ${rt.driverVersion}, NVRTC ${rt.nvrtcVersion.join('.')}, ${new Date().toISOString()}`);

const { take, put, get, timeMs } = deviceHelpers(rt);

// the most dynamic shared memory a block may opt in to (CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN):
// sel with QB 128 at HS 128 takes 213.5 KiB
const optin = new Int32Array(1);
rt.cu('cuDeviceGetAttribute', optin, 97, rt.ordinal);
const loaded = new Map<string, Kernel>();
function kern(src: KernelSource, shared = false): Kernel {
  let k = loaded.get(src.name);
  if (k === undefined) {
    k = rt.kernel(src);
    if (shared) rt.cu('cuFuncSetAttribute', k.fn, 8, optin[0]);
    loaded.set(src.name, k);
    emit({ kind: 'kernel', name: src.name, registers: k.registers, localBytes: k.localBytes });
  }
  return k;
}
const blocks = (n: number, per: number): number => Math.max(1, Math.ceil(n / per));

/** Selection + key intervals + key offsets of every (b, KV head) row, by the existing kernels. */
function selection(u: DeviceBlock, BH: number, T: number, K: number, W: number) {
  const ntiles = Math.ceil(T / SELECT_BQ), cap = 4096;
  const jbits = T > 1 ? 32 - Math.clz32(T - 1) : 0;
  const tau = take(BH * T * 8), thk = take(BH * T * 8), count = take(BH * T * 4), nfree = take(BH * T * 4), sel = take(BH * T * K * 4);
  const flags = take(BH * ntiles * 4), e = take(BH * T * 4), off = take(BH * (T + 1) * 4);
  let capG = 1;
  while (capG < T) capG *= 2;
  const G = Math.min(rt.multiprocessors, ntiles * BH);
  const scratch = take(G * 2 * capG * 8);
  const shared = kern(selectSharedSource({ CAP: cap }));
  rt.cu('cuFuncSetAttribute', shared.fn, 8, 16 * cap);
  rt.launch(shared, [ntiles, BH, 1], SELECT_BQ, 16 * cap, [tau.ptr, thk.ptr, count.ptr, nfree.ptr, sel.ptr, flags.ptr, u.ptr, T, K, W, jbits]);
  rt.launch(kern(selectGlobalSource()), G, SELECT_BQ, 0, [tau.ptr, thk.ptr, count.ptr, nfree.ptr, sel.ptr, flags.ptr, scratch.ptr, u.ptr, T, K, W, jbits, ntiles, BH, capG]);
  rt.launch(kern(keyIntervalsSource()), blocks(BH * T, 256), 256, 0, [e.ptr, u.ptr, thk.ptr, BH, T, W]);
  const offsets = (): void => rt.launch(kern(keyOffsetsSource()), BH, PREFIX_BLOCK, 0, [off.ptr, e.ptr, T, W]);
  offsets();
  const rows64 = compactRows(rt, sel, BH, T, K); // the rows the tensor-core kernels read
  rt.synchronize();
  const free = (): void => { for (const b of [tau, thk, count, nfree, sel, rows64, flags, e, off, scratch]) rt.arena.give(b); };
  return { tau, thk, count, nfree, sel, rows64, e, off, offsets, free };
}
type Sel = ReturnType<typeof selection>;

const FWD: FastForwardVariant = { HS: 64, BQ: 64, OUT: 'bf16', META: 'all', STAGES: 2, FASTEXP: true };
function forward(OUT: 'bf16' | 'f32', out: DeviceBlock, lse: DeviceBlock, d: Dev, s: Sel, shape: AttentionShape, K: number, W: number): void {
  const o: FastForwardVariant = { ...FWD, HS: shape.HS as 64 | 128, OUT };
  rt.launch(kern(fastForwardSource(o), true), [Math.ceil(shape.T / 64), shape.NH, shape.B], 128, fastForwardShared(o, K, W),
    [out.ptr, lse.ptr, d.q.ptr, d.k.ptr, d.v.ptr, d.u.ptr, s.tau.ptr, s.thk.ptr, s.count.ptr, s.rows64.ptr, shape.T, shape.NH, shape.NKV, K, W, 1 / Math.sqrt(shape.HS)]);
}
interface Dev { q: DeviceBlock; k: DeviceBlock; v: DeviceBlock; u: DeviceBlock; dout: DeviceBlock }
interface Outs { dq: DeviceBlock; dk: DeviceBlock; dv: DeviceBlock; D: DeviceBlock; dsel: DeviceBlock; mean: DeviceBlock; P: DeviceBlock; du: DeviceBlock }
function outs(shape: AttentionShape, K: number): Outs {
  const { B, T, NH, NKV, HS } = shape;
  return {
    dq: take(B * NH * T * HS * 4), dk: take(B * NKV * T * HS * 4), dv: take(B * NKV * T * HS * 4), D: take(B * NH * T * 4),
    dsel: take(B * NKV * T * 8), mean: take(B * NKV * T * 8), P: take(B * NKV * (T + 1) * 8), du: take(B * NKV * T * 4),
  };
}
const giveAll = (o: object): void => { for (const b of Object.values(o)) if (b && typeof b === 'object' && 'ptr' in b) rt.arena.give(b as DeviceBlock); };

/** The backward's launches: prep, win, sel; and du: mean prefix, score grad. */
function backward(v: LabVariant, OUT: 'bf16' | 'f32', o: Outs, out: DeviceBlock, lse: DeviceBlock, d: Dev, s: Sel, shape: AttentionShape, K: number, W: number) {
  const { B, T, NH, NKV, HS } = shape, scale = 1 / Math.sqrt(HS), BH = B * NKV;
  const prep = (): void => rt.launch(kern(bwdPrepSource(OUT, HS)), bwdPrepGrid(B * NH * T, HS), 256, 0, [o.D.ptr, o.dq.ptr, d.dout.ptr, out.ptr, B * NH * T, HS]);
  const win = (): void => rt.launch(kern(winSource(v), true), [v.wg ? bwdWinWgBlocks(v.wg, T) : Math.ceil(T / BT), NKV, B], v.wg ? bwdWinWgThreads(v.wg) : BWD_THREADS, v.wg ? bwdWinWgShared(v.wg) : bwdWinShared(v),
    [o.dk.ptr, o.dv.ptr, o.dq.ptr, d.q.ptr, d.k.ptr, d.v.ptr, d.dout.ptr, lse.ptr, o.D.ptr, T, NH, NKV, W, scale]);
  const sel = (): void => rt.launch(kern(selSource(v), true), v.sg ? [bwdSelWgBlocks(v.sg, T), NKV, B] : [bwdSelBlocks(v, T), NKV, B],
    v.sg ? BWD_SEL_WG_THREADS : BWD_THREADS, v.sg ? bwdSelWgShared(v.sg, K) : bwdSelShared(v, K),
    [o.dq.ptr, o.dk.ptr, o.dv.ptr, o.dsel.ptr, o.mean.ptr, d.q.ptr, d.k.ptr, d.v.ptr, d.dout.ptr, lse.ptr, o.D.ptr, d.u.ptr,
      s.tau.ptr, s.thk.ptr, s.count.ptr, s.rows64.ptr, s.nfree.ptr, T, NH, NKV, K, W, scale]);
  const du = (): void => {
    const sums = rt.arena.take(BH * meanChunks(T) * 8);
    rt.launch(kern(meanChunksSource()), [meanChunks(T), BH, 1], MEAN_THREADS, 0, [sums.ptr, o.mean.ptr, T]);
    rt.launch(kern(meanPrefixSource()), [meanChunks(T), BH, 1], MEAN_THREADS, 0, [o.P.ptr, sums.ptr, o.mean.ptr, T]);
    rt.arena.give(sums);
    const sg = scoreGradLaunch(T, BH);
    rt.launch(kern(scoreGradSource('sums')), sg.grid, sg.block, sg.shared, [o.du.ptr, d.u.ptr, s.tau.ptr, o.dsel.ptr, o.P.ptr, BH, T, K, W, sg.C]);
  };
  const zero = (): void => rt.cu('cuMemsetD32Async', o.dsel.ptr, 0, 2 * BH * T, rt.stream);
  return { prep, win, sel, du, all: (): void => { prep(); zero(); win(); sel(); if (K > 0) du(); } };
}

// ---- 2. validation -------------------------------------------------------------------------------
/**
 * Naive same-precision backward from the CPU rows: bf16 tensors between ops, fp32 accumulation.
 * s = bf16(scale q.k), a = bf16(softmax_fp32(s)), dov = bf16(do.v), da = bf16(g dov), D = sum_fp32 a da,
 * ds = bf16(scale a (da - D)), dq = bf16(sum ds k), dk = bf16(sum ds q), dv = bf16(sum bf16(a g) do),
 * dg = bf16(a dov) (fp32 sum over heads), mean in fp32, du by the score-gradient port.
 */
function naiveBackward(x: ReturnType<typeof caseInputs>, c: Case, plan: SparsekPlan, sd: SelData): Grads {
  const { B, T, NH, NKV, HS } = c.shape, { K, W } = c, G = NH / NKV, scale = fr(1 / Math.sqrt(HS));
  const dq = new Float64Array(B * NH * T * HS), dk = new Float32Array(B * NKV * T * HS), dv = new Float32Array(dk.length);
  const dgk = Array.from({ length: B * NKV }, (_, bh) => new Float64Array(Math.max(1, sd.off[bh][T])));
  const num = Array.from({ length: B * NKV }, () => new Float32Array(T));
  const pattern = sparsekPattern(plan, NKV), cols = new Int32Array(Math.max(1, pattern.maxKeys)), gates = new Float64Array(cols.length);
  const a = new Float32Array(cols.length), dov = new Float32Array(cols.length), acc = new Float32Array(HS);
  const dot32 = (p: ArrayLike<number>, po: number, qq: ArrayLike<number>, qo: number): number => { let d = 0; for (let e = 0; e < HS; e++) d = fr(d + fr(p[po + e] * qq[qo + e])); return d; };
  for (let b = 0; b < B; b++) for (let hq = 0; hq < NH; hq++) {
    const h = Math.floor(hq / G), bh = b * NKV + h, kv = bh * T * HS, f = plan.sel[bh];
    for (let i = 0; i < T; i++) {
      const row = (b * NH + hq) * T + i, n = pattern.row(b, h, i, cols, gates);
      let mx = -Infinity;
      for (let cc = 0; cc < n; cc++) { a[cc] = bf16(fr(dot32(x.q, row * HS, x.k, kv + cols[cc] * HS) * scale)); mx = Math.max(mx, a[cc]); }
      let sum = 0;
      for (let cc = 0; cc < n; cc++) { a[cc] = fr(Math.exp(a[cc] - mx)); sum = fr(sum + a[cc]); }
      let D = 0;
      for (let cc = 0; cc < n; cc++) {
        a[cc] = bf16(fr(a[cc] / sum));
        dov[cc] = bf16(dot32(x.dout, row * HS, x.v, kv + cols[cc] * HS));
        D = fr(D + fr(a[cc] * bf16(fr(gates[cc] * dov[cc]))));
      }
      acc.fill(0);
      const nWin = n - f.count[i];
      for (let cc = 0; cc < n; cc++) {
        const j = cols[cc], g = fr(gates[cc]);
        const ds = bf16(fr(scale * fr(a[cc] * fr(bf16(fr(g * dov[cc])) - D))));
        const ag = bf16(fr(a[cc] * g));
        for (let e = 0; e < HS; e++) {
          acc[e] = fr(acc[e] + fr(ds * x.k[kv + j * HS + e]));
          dk[kv + j * HS + e] = fr(dk[kv + j * HS + e] + fr(ds * x.q[row * HS + e]));
          dv[kv + j * HS + e] = fr(dv[kv + j * HS + e] + fr(ag * x.dout[row * HS + e]));
        }
        if (cc >= nWin) {
          const dg = bf16(fr(a[cc] * dov[cc])), slot = sd.off[bh][j] + i - j - W;
          dgk[bh][slot] = fr(dgk[bh][slot] + dg);
          const uj = plan.u[bh * T + j] as number, t = f.tau[i];
          if (uj > t && uj - t < 1) num[bh][i] = fr(num[bh][i] + dg);
        }
      }
      for (let e = 0; e < HS; e++) dq[row * HS + e] = bf16(acc[e]);
    }
  }
  const mean = num.map((r, bh) => Float64Array.from(r, (y, i) => (sd.nfree[bh][i] > 0 ? fr(y / sd.nfree[bh][i]) : 0)));
  const du = K > 0 ? scoreGrad(x.u, plan, sd, dgk, mean, B * NKV).map((y) => bf16(y)) : new Float64Array(B * NKV * T);
  return { dq, dk: Float64Array.from(dk, bf16), dv: Float64Array.from(dv, bf16), du, dgk, mean };
}

const fmt = (e: { max: number; rms: number }): string => `${e.max.toExponential(2)}/${e.rms.toExponential(2)}`;
if (!args.includes('--skip-validate')) {
  console.log('# validate: errors vs the float64 CPU backward on bf16-rounded inputs, max|err|/max|ref| and rms(err)/rms(ref); ok: kernel <= 2x naive bf16 (+1e-6)');
  for (const c of cases) {
    const { shape } = c, { B, T, NH, NKV, HS } = shape, BH = B * NKV;
    let p: ReturnType<typeof prepare>, naive: Grads;
    try {
      p = prepare(c);
      naive = naiveBackward(p.x, c, p.plan, p.sd);
    } catch (err) {
      emit({ kind: 'validate', case: c.name, ok: false, error: `host reference: ${(err as Error).message}` });
      process.exitCode = 1;
      continue;
    }
    const d: Dev = { q: put(bitsOf(p.x.q)), k: put(bitsOf(p.x.k)), v: put(bitsOf(p.x.v)), u: put(p.x.u), dout: put(bitsOf(p.x.dout)) };
    const s = selection(d.u, BH, T, c.K, c.W);
    // the device's slot layout must be the emulated one (same e_j)
    const offDev = get(s.off, new Int32Array(BH * (T + 1)));
    const offOk = p.sd.off.every((o, bh) => o.every((y, j) => offDev[bh * (T + 1) + j] === y));
    if (!offOk) emit({ kind: 'validate', case: c.name, ok: false, error: 'device key offsets differ from the CPU selection\'s' });
    const lse = take(B * NH * T * 4);
    for (const v of variants) for (const OUT of ['f32', 'bf16'] as const) {
      if (v.HS !== HS) continue;
      const o = outs(shape, c.K);
      const out = take(B * NH * T * HS * (OUT === 'f32' ? 4 : 2));
      try {
        forward(OUT, out, lse, d, s, shape, c.K, c.W);
        // dq full of NaN: a row that no kernel zeroes or stores cannot pass
        rt.cu('cuMemsetD32Async', o.dq.ptr, 0x7fc00000, B * NH * T * HS, rt.stream);
        backward(v, OUT, o, out, lse, d, s, shape, c.K, c.W).all();
        rt.synchronize();
        const got: Grads = {
          dq: Float64Array.from(get(o.dq, new Float32Array(B * NH * T * HS))),
          dk: Float64Array.from(get(o.dk, new Float32Array(BH * T * HS))),
          dv: Float64Array.from(get(o.dv, new Float32Array(BH * T * HS))),
          du: c.K > 0 ? Float64Array.from(get(o.du, new Float32Array(BH * T))) : new Float64Array(BH * T),
          dgk: [], // sel sums each key's gate gradients on the device (dsel); du checks them
        };
        const res: Record<string, string> = {};
        let ok = offOk;
        const check = (name: string, g: ArrayLike<number>, r: ArrayLike<number>, n: ArrayLike<number>): void => {
          const e = errors(g, r), en = errors(n, r);
          const good = e.max <= 2 * en.max + 1e-6 && e.rms <= 2 * en.rms + 1e-6;
          res[name] = `${fmt(e)} naive ${fmt(en)}${good ? '' : ' FAILED'}`;
          ok &&= good;
        };
        check('dq', got.dq, p.ref.dq, naive.dq);
        check('dk', got.dk, p.ref.dk, naive.dk);
        check('dv', got.dv, p.ref.dv, naive.dv);
        if (c.K > 0) {
          check('du', got.du, p.ref.du, naive.du);
        }
        emit({ kind: 'validate', case: c.name, B, T, NH, NKV, HS, K: c.K, W: c.W, variant: vname(v), out: OUT, ok, ...res });
        if (!ok) process.exitCode = 1;
      } catch (err) {
        emit({ kind: 'validate', case: c.name, variant: vname(v), out: OUT, ok: false, error: (err as Error).message.split('\n')[0] });
        process.exitCode = 1;
      }
      rt.arena.give(out);
      giveAll(o);
    }
    s.free();
    giveAll(d);
    rt.arena.give(lse);
  }
}

// ---- 3. timing ---------------------------------------------------------------------------------
console.log(`# timing: B=1 NH=${NHt} NKV=${NKVt} K=${Kt} W=${Wt}, bf16 q k v dout, out bf16, median of ${repeats}; TFLOP/s = 10 HS (attended pairs) / time`);
for (const HS of HSs) {
  for (const T of Ts) {
    const shape: AttentionShape = { B: 1, T, NH: NHt, NKV: NKVt, HS };
    const nq = NHt * T * HS, nkv = NKVt * T * HS, BH = NKVt, K = Kt, W = Wt;
    let d: Dev | null = null, s: Sel | null = null;
    try {
      const qh = normal(nq, 11), kh = normal(nkv, 12), vh = normal(nkv, 13), doh = normal(nq, 14);
      d = { q: put(bitsOf(qh)), k: put(bitsOf(kh)), v: put(bitsOf(vh)), u: put(normal(NKVt * T, 15)), dout: put(bitsOf(doh)) };
      s = selection(d.u, BH, T, K, W);
      const count = get(s.count, new Int32Array(BH * T));
      let pairs = 0;
      for (let i = 0; i < T; i++) pairs += Math.min(W, i + 1) * BH;
      for (const x of count) pairs += x;
      pairs *= NHt / NKVt;
      const out = take(nq * 2), lse = take(NHt * T * 4);
      const fwdMs = timeMs(() => forward('bf16', out, lse, d!, s!, shape, K, W), Math.min(repeats, 10));
      const tf = (ms: number): number => +((10 * HS * pairs) / (ms * 1e-3) / 1e12).toFixed(1);
      for (const v of variants) {
        if (v.HS !== HS) continue;
        const o = outs(shape, K);
        try {
          const bw = backward(v, 'bf16', o, out, lse, d, s, shape, K, W);
          bw.all();
          rt.synchronize();
          // each kernel alone (re-running win or sel only grows the sums it adds to: same work)
          const prep = timeMs(bw.prep, repeats), win = timeMs(bw.win, repeats), sel = timeMs(bw.sel, repeats);
          const du = timeMs(bw.du, repeats);
          const total = timeMs(bw.all, repeats);
          emit({ kind: 'time', variant: vname(v), T, NH: NHt, HS, K, W, pairs, fwd_ms: +fwdMs.toFixed(3), prep_ms: +prep.toFixed(3), win_ms: +win.toFixed(3),
            sel_ms: +sel.toFixed(3), du_ms: +du.toFixed(3), bwd_ms: +total.toFixed(3), bwd_tflops_attn: tf(total - du), fwd_tflops_at_10HS: tf(fwdMs) });
        } catch (err) {
          emit({ kind: 'time', variant: vname(v), T, HS, ok: false, error: (err as Error).message.split('\n')[0] });
        }
        giveAll(o);
      }
      // the production fp32 backward (attention.ts) on the same inputs, for the speed-up
      if (!args.includes('--no-prod') && HS % 4 === 0) {
        const pv = { HS, VEC: 4 as const, SEL: true };
        const F = (a: Float32Array): DeviceBlock => put(toBf16(a));
        const qf = F(qh), kf = F(kh), vf = F(vh), dof = F(doh);
        const outF = take(nq * 4), lseF = take(NHt * T * 4), dq = take(nq * 4), dk = take(nkv * 4), dv = take(nkv * 4), D = take(NHt * T * 4);
        const mean = take(BH * T * 8), dgk = take(BH * T * K * 4);
        forward('f32', outF, lseF, d, s, shape, K, W);
        const rows = Math.ceil(T / ATTENTION_WARPS);
        const run = (): void => {
          rt.launch(kern(attentionBackwardQuerySource(pv)), [rows, NKVt, 1], 32 * ATTENTION_WARPS, 0,
            [dq.ptr, D.ptr, mean.ptr, dgk.ptr, dof.ptr, outF.ptr, lseF.ptr, qf.ptr, kf.ptr, vf.ptr, d!.u.ptr, s!.tau.ptr, s!.count.ptr, s!.sel.ptr, s!.nfree.ptr, s!.off.ptr,
              T, NHt, NKVt, K, W, 1 / Math.sqrt(HS)]);
          rt.launch(kern(attentionBackwardKeySource(pv)), [rows, NKVt, 1], 32 * ATTENTION_WARPS, 0,
            [dk.ptr, dv.ptr, dof.ptr, lseF.ptr, D.ptr, qf.ptr, kf.ptr, vf.ptr, d!.u.ptr, s!.tau.ptr, s!.e.ptr, T, NHt, NKVt, W, 1 / Math.sqrt(HS)]);
        };
        try {
          const ms = timeMs(run, Math.min(repeats, 5));
          emit({ kind: 'time', variant: 'production_fp32', T, NH: NHt, HS, K, W, bwd_ms_without_du: +ms.toFixed(3), tflops: tf(ms) });
        } catch (err) {
          emit({ kind: 'time', variant: 'production_fp32', T, HS, ok: false, error: (err as Error).message.split('\n')[0] });
        }
        for (const b of [qf, kf, vf, dof, outF, lseF, dq, dk, dv, D, mean, dgk]) rt.arena.give(b);
      }
      rt.arena.give(out);
      rt.arena.give(lse);
    } catch (err) {
      emit({ kind: 'time', T, HS, ok: false, error: (err as Error).message.split('\n')[0] });
    }
    s?.free();
    if (d) giveAll(d);
  }
}
