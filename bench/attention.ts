// Attention alone on the GPU (issue 5): one layer's forward, and forward + backward, through
// CudaBackend exactly as training runs it, the SparseK selection included (SPEC section 3), for
// the shapes of .device/peers.py (PyTorch SDPA flash and FlexAttention, run in the same call).
//   node --import tsx bench/attention.ts [--T 4096,16384,65536] [--HS 64] [--NH 16] [--NKV 16]
//        [--K 512] [--W 512] [--precision bf16] [--kinds sparsek] [--profile]
// Times (fwd_ms, fwd_bwd_ms) follow the peers' protocol (.device/peers.py: triton.testing.do_bench):
// before each repetition the L2 cache is cleared by writing a 256 MB buffer, then CUDA events on the
// stream time the GPU from the repetition's first launch to its last; the median. The wall times
// (fwd_wall_ms, fwd_bwd_wall_ms: medians of performance.now() around launch and synchronise, so with
// the host's launch and synchronisation latency in them) are printed too (docs/decisions.md, "Our
// times by the peers' protocol"). TFLOP/s counts 4 HS FLOP per attended (query, key) pair for the
// forward and 14 HS for forward + backward (the backward's 5 products of 2 HS). --profile adds the
// GPU time of each kernel of one forward and one backward.
import { execSync } from 'node:child_process';
import { CudaBackend } from '../src/cuda/backend.js';
import type { CudaAttentionLayer } from '../src/cuda/backend.js';
import type { Precision } from '../src/backend.js';
import type { AttentionKind } from '../src/model/config.js';
import { Rng } from '../src/core/random.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : fallback);
const Ts = flag('T', '4096,16384,65536').split(',').map(Number);
const HS = Number(flag('HS', '64')), NH = Number(flag('NH', '16')), NKV = Number(flag('NKV', '16'));
const K = Number(flag('K', '512')), W = Number(flag('W', '512'));
const precision = flag('precision', 'bf16') as Precision;
const kinds = flag('kinds', 'sparsek').split(',') as AttentionKind[];
const be = new CudaBackend(undefined, { precision });
const commit = process.env.SPARSEK_COMMIT ?? (() => { try { return execSync('git rev-parse --short HEAD', { encoding: 'utf8' }).trim(); } catch { return 'unknown'; } })();
console.log(`# attention benchmark: ${be.rt.name}, ${precision}, commit ${commit}, ${new Date().toISOString().slice(0, 10)}; B=1 NH=${NH} NKV=${NKV} HS=${HS} K=${K} W=${W}`);

const middle = (t: number[]) => t.sort((a, b) => a - b)[Math.floor(t.length / 2)];

function wallMedian(fn: () => void, reps: number): number {
  fn();
  be.synchronize();
  const t: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    fn();
    be.synchronize();
    t.push(performance.now() - t0);
  }
  return middle(t);
}

const l2flush = be.alloc(64 << 20, 'f32'); // 256 MB, as do_bench's cache buffer
function gpuMedian(fn: () => void, reps: number): number {
  fn();
  be.synchronize();
  const events = Array.from({ length: reps }, () => [be.rt.createEvent(), be.rt.createEvent()] as const);
  for (const [start, end] of events) {
    be.zero(l2flush);
    be.rt.record(start);
    fn();
    be.rt.record(end);
  }
  const t = events.map(([start, end]) => be.rt.elapsedMs(start, end));
  for (const pair of events) for (const e of pair) be.rt.destroyEvent(e);
  return middle(t);
}

for (const attention of kinds) {
  for (const T of Ts) {
    const shape = { B: 1, T, NH, NKV, HS };
    const nq = NH * T * HS, nkv = NKV * T * HS, nu = NKV * T;
    const rng = new Rng(T);
    const rand = (n: number, s = 1) => { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = (rng.uniform() * 2 - 1) * s; return a; };
    const layer = be.attention({ attention, k: K, window: W, hashBuckets: 2 }, shape) as CudaAttentionLayer;
    // q, k, v, out and dout in the storage the layer reads (bf16 for the tensor-core kernels, as the
    // peers get them and as the model hands them over); the scores and gradients in float32.
    const up = (a: Float32Array, storage = layer.io) => { const b = be.alloc(a.length, storage); be.upload(b, a); return b; };
    const q = up(rand(nq)), k = up(rand(nkv)), v = up(rand(nkv)), u = up(rand(nu, 2), 'f32'), dout = up(rand(nq));
    const [out, dq, dk, dv, du] = [be.alloc(nq, layer.io), be.alloc(nq), be.alloc(nkv), be.alloc(nkv), be.alloc(nu)];
    const scored = attention === 'sparsek' ? u : null;
    const reps = T >= 65536 ? 7 : 15;
    const forward = () => layer.forward(out, q, k, v, scored);
    const step = () => { forward(); layer.backward(dq, dk, dv, scored ? du : null, dout); };
    const fwd = gpuMedian(forward, 3 * reps), both = gpuMedian(step, 3 * reps);
    const fwdWall = wallMedian(forward, reps), bothWall = wallMedian(step, reps);
    // Attended pairs: window keys min(W, i + 1) plus min(K, candidates) selected keys per query row.
    let pairs = 0;
    for (let i = 0; i < T; i++) pairs += Math.min(W, i + 1) + (attention === 'sparsek' ? Math.min(K, Math.max(0, i - W + 1)) : 0);
    pairs *= NH;
    console.log(JSON.stringify({ peer: 'sparsek-cuda', attention, precision, kernels: layer.kernels, io: out.dtype, T, HS, NH, NKV, K, W,
      fwd_ms: Number(fwd.toFixed(3)), fwd_bwd_ms: Number(both.toFixed(3)),
      fwd_wall_ms: Number(fwdWall.toFixed(3)), fwd_bwd_wall_ms: Number(bothWall.toFixed(3)),
      fwd_tflops: Number(((4 * HS * pairs) / (fwd * 1e9)).toFixed(1)), fwd_bwd_tflops: Number(((14 * HS * pairs) / (both * 1e9)).toFixed(1)) }));
    if (args.includes('--profile')) {
      // GPU time per kernel of one forward and one backward (CUDA events around each launch).
      const part = (fn: () => void) => Object.fromEntries(be.rt.profile(fn).map((k) => [k.name, Number(k.ms.toFixed(3))]));
      console.log(JSON.stringify({ profile: 'forward', T, HS, NKV, kernels: part(() => layer.forward(out, q, k, v, scored)) }));
      console.log(JSON.stringify({ profile: 'backward', T, HS, NKV, kernels: part(() => layer.backward(dq, dk, dv, scored ? du : null, dout)) }));
    }
    layer.dispose();
    for (const b of [q, k, v, u, dout, out, dq, dk, dv, du]) be.free(b);
  }
}
be.free(l2flush);
