// CPU benchmark (STYLE.md "Benchmarks"; results go to bench/RESULTS.md):
//   (a) the SparseK operator (SPEC section 1) in elements/s, 'sort' and 'linear' via sparsekRows,
//       next to a naive full-sort projection written here;
//   (b) attention forward + backward, dense baseline vs SparseK, for growing T, in ms and GFLOP/s.
// Single-threaded, plain TypeScript on Node: these are the reference kernels, not tuned ones.
// Not here: GPU timings, model-level throughput (tokens/s).
//
//   npm run bench                      full run (dense up to T = 16384: a few minutes)
//   npm run bench -- --quick           stop at T = 4096
//   npm run bench -- --max-dense-T 4096

import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { AttentionShape, SelectOptions } from '../src/core/check.js';
import { OptionError, SparsekError } from '../src/core/errors.js';
import { Rng } from '../src/core/random.js';
import { sparsekAttentionBackwardInto, sparsekAttentionForwardInto } from '../src/cpu/kernels/attention.js';
import { BaselineOptions, attentionBackwardInto, attentionForwardInto } from '../src/cpu/kernels/baselines.js';
import { sparsekRows } from '../src/cpu/kernels/sparsek.js';

interface Flags {
  quick: boolean;
  maxDenseT: number;
}

function parseFlags(argv: string[]): Flags {
  const flags: Flags = { quick: false, maxDenseT: 16384 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') flags.quick = true;
    else if (a === '--max-dense-T') {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) throw new OptionError(`--max-dense-T: expected a non-negative integer, got ${JSON.stringify(argv[i] ?? '')}`);
      flags.maxDenseT = v;
    } else throw new OptionError(`unknown flag ${JSON.stringify(a)}: expected --quick or --max-dense-T N`);
  }
  return flags;
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function seconds(f: () => void): number {
  const t0 = performance.now();
  f();
  return (performance.now() - t0) / 1000;
}

function normals(rng: Rng, n: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = rng.normal();
  return x;
}

/** Prints rows as a space-aligned table and as a markdown table. */
function printTables(title: string, header: string[], rows: string[][]): string {
  const width = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (r: string[]) => r.map((x, c) => (c === 0 ? x.padEnd(width[c]) : x.padStart(width[c]))).join('  ');
  console.log(`\n${title}\n`);
  console.log(line(header));
  for (const r of rows) console.log(line(r));
  const md = [`| ${header.join(' | ')} |`, `|${header.map((_, c) => (c === 0 ? ':--' : '--:')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
  return md;
}

// ---------------------------------------------------------------------------------------------
// (a) The SparseK operator

/**
 * The projection a user would write first: copy the row, sort it (native, ascending), then walk the
 * breakpoints of f(t) = sum_i clip(z_i - t, 0, 1) from the top (z_i: i enters the free set F;
 * z_i - 1: it moves on to U) until f passes k, and solve the linear piece for tau.
 */
function naiveSparsekRows(z: Float64Array, n: number, k: number): Float64Array {
  const p = new Float64Array(z.length);
  const s = new Float64Array(n);
  for (let off = 0; off < z.length; off += n) {
    s.set(z.subarray(off, off + n));
    s.sort();
    let a = n - 1; // s[a] is the next score to enter F
    let b = n - 1; // s[b] is the next score to enter U (at t = s[b] - 1)
    let nU = 0;
    let nF = 0;
    let sumF = 0;
    for (;;) {
      const tA = a >= 0 ? s[a] : -Infinity;
      const tB = s[b] - 1;
      const next = tA >= tB ? tA : tB;
      if (nU + sumF - nF * next > k) break;
      if (tA >= tB) {
        sumF += s[a--];
        nF++;
      } else {
        sumF -= s[b--];
        nF--;
        nU++;
      }
    }
    const tau = (sumF + nU - k) / nF;
    for (let i = off; i < off + n; i++) {
      const d = z[i] - tau;
      p[i] = d <= 0 ? 0 : d >= 1 ? 1 : d;
    }
  }
  return p;
}

function benchOperator(): string {
  const K = 64;
  const sizes = [1024, 16384, 262144];
  const rng = new Rng(1);
  const header = ['n (k = 64)', 'rows/pass', 'naive sort (Melem/s)', "'sort' (Melem/s)", "'linear' (Melem/s)", 'linear / naive', 'max abs diff vs naive'];
  const rows: string[][] = [];
  for (const n of sizes) {
    // A pool of about 4M standard-normal scores, re-used across passes.
    const nRows = Math.max(1, Math.floor((1 << 22) / n));
    const z = new Float64Array(nRows * n);
    for (let i = 0; i < z.length; i++) z[i] = rng.normal();
    const runs: Record<string, () => Float64Array> = {
      naive: () => naiveSparsekRows(z, n, K),
      sort: () => sparsekRows(z, n, K, 'sort').p,
      linear: () => sparsekRows(z, n, K, 'linear').p,
    };
    const rate: Record<string, number> = {};
    const outputs: Record<string, Float64Array> = {};
    for (const [name, run] of Object.entries(runs)) {
      outputs[name] = run(); // warm-up
      const once = Math.max(seconds(run), 1e-4);
      const passes = Math.max(1, Math.round(0.3 / once));
      const times: number[] = [];
      for (let r = 0; r < 5; r++) times.push(seconds(() => { for (let i = 0; i < passes; i++) run(); }));
      rate[name] = (passes * z.length) / median(times);
    }
    let maxDiff = 0;
    for (const name of ['sort', 'linear']) {
      for (let i = 0; i < z.length; i++) maxDiff = Math.max(maxDiff, Math.abs(outputs[name][i] - outputs.naive[i]));
    }
    const M = (x: number) => (x / 1e6).toFixed(1);
    rows.push([String(n), String(nRows), M(rate.naive), M(rate.sort), M(rate.linear), `${(rate.linear / rate.naive).toFixed(2)}x`, maxDiff.toExponential(1)]);
    console.error(`  operator n=${n} done`);
  }
  return printTables('(a) SparseK operator, k = 64, standard-normal scores; median of 5 repeats of ~0.3 s after warm-up', header, rows);
}

// ---------------------------------------------------------------------------------------------
// (b) Attention forward + backward

/** Query-key pairs SparseK attends: sum over i of |Win_i| + |Sel_i| (SPEC section 3). */
function sparsekPairs(T: number, K: number, W: number): number {
  let n = 0;
  for (let i = 0; i < T; i++) n += Math.min(i + 1, W) + Math.min(K, Math.max(0, W > 0 ? i - W + 1 : i + 1));
  return n;
}

interface Timing {
  fwd: number;
  bwd: number;
  reps: number;
}

/** Median forward and backward seconds: 5 repeats when one run takes under 2 s, else 1. */
function timeFwdBwd(fwd: () => void, bwd: () => void): Timing {
  const f: number[] = [];
  const b: number[] = [];
  for (let r = 0; r < 5; r++) {
    f.push(seconds(fwd));
    b.push(seconds(bwd));
    if (r === 0 && f[0] + b[0] > 2) break;
  }
  return { fwd: median(f), bwd: median(b), reps: f.length };
}

function benchAttention(flags: Flags): string {
  const HS = 64;
  const sel: SelectOptions = { k: 64, window: 64 };
  const dense: BaselineOptions = { kind: 'dense' };
  const Ts = [1024, 2048, 4096, 8192, 16384].filter((T) => !flags.quick || T <= 4096);
  const header = ['attention', 'T', 'pairs', 'fwd ms', 'bwd ms', 'fwd+bwd ms', 'GFLOP/s', 'growth vs T/2', 'repeats'];
  const rows: string[][] = [];
  const rng = new Rng(2);
  const run = (name: 'dense' | 'sparsek', T: number): Timing => {
    const s: AttentionShape = { B: 1, T, NH: 1, NKV: 1, HS };
    const x = { q: normals(rng, T * HS), k: normals(rng, T * HS), v: normals(rng, T * HS), u: normals(rng, T) };
    const dout = normals(rng, T * HS);
    const out = new Float32Array(T * HS);
    const dq = new Float32Array(T * HS);
    const dk = new Float32Array(T * HS);
    const dv = new Float32Array(T * HS);
    const du = new Float32Array(T);
    if (name === 'dense') {
      return timeFwdBwd(() => attentionForwardInto(out, x, s, dense), () => attentionBackwardInto(dq, dk, dv, dout, x, s, dense));
    }
    let plan = sparsekAttentionForwardInto(out, x, s, sel);
    return timeFwdBwd(
      () => { plan = sparsekAttentionForwardInto(out, x, s, sel); },
      () => sparsekAttentionBackwardInto(dq, dk, dv, du, dout, x, s, sel, plan),
    );
  };
  // Warm-up: let the JIT see both paths before anything is timed.
  run('dense', 512);
  run('sparsek', 1024);
  for (const name of ['dense', 'sparsek'] as const) {
    let prev = 0;
    for (const T of Ts) {
      if (name === 'dense' && T > flags.maxDenseT) continue;
      const t = run(name, T);
      const pairs = name === 'dense' ? (T * (T + 1)) / 2 : sparsekPairs(T, sel.k, sel.window);
      const flop = 4 * pairs * HS * (1 + 2.5); // forward 4 * pairs * HS, backward 2.5x forward
      const total = t.fwd + t.bwd;
      rows.push([
        name === 'dense' ? 'dense' : 'sparsek K=64 W=64', String(T), String(pairs),
        (t.fwd * 1e3).toFixed(1), (t.bwd * 1e3).toFixed(1), (total * 1e3).toFixed(1),
        (flop / total / 1e9).toFixed(2), prev > 0 ? `${(total / prev).toFixed(2)}x` : '-', String(t.reps),
      ]);
      prev = total;
      console.error(`  ${name} T=${T} done (${(total).toFixed(1)} s)`);
    }
  }
  return printTables(
    '(b) attention forward + backward, B = 1, NH = NKV = 1, HS = 64, random q, k, v, u\n' +
      '    FLOP: forward = 4 * pairs * HS (q.k and a.v), backward = 2.5 * forward (scores recomputed, then dv, dq, dk);\n' +
      '    pairs = T(T+1)/2 for dense, sum_i min(i+1, W) + min(K, max(0, i-W+1)) for SparseK',
    header, rows);
}

// ---------------------------------------------------------------------------------------------

function gitCommit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain'], { encoding: 'utf8' }).trim() !== '';
    return dirty ? `${head} (with uncommitted changes)` : head;
  } catch {
    return 'unknown (not a git checkout)';
  }
}

function main(): void {
  const flags = parseFlags(process.argv.slice(2));
  const cpus = os.cpus();
  console.log('sparsek CPU benchmark');
  console.log(`device: ${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${cpus.length} logical cores (one used: single-threaded)`);
  console.log(`node ${process.version}, ${os.platform()} ${os.arch()}`);
  console.log(`commit: ${gitCommit()}`);
  console.log(`date: ${new Date().toISOString()}`);
  // The machine may be shared: a load above 0 at the start means other work competed for the cores.
  console.log(`load average at start (1, 5, 15 min): ${os.loadavg().map((x) => x.toFixed(2)).join(', ')}`);
  const mdA = benchOperator();
  const mdB = benchAttention(flags);
  console.log('\nMarkdown (for bench/RESULTS.md):\n');
  console.log(mdA);
  console.log();
  console.log(mdB);
}

try {
  main();
} catch (e) {
  if (!(e instanceof SparsekError)) throw e;
  console.error(e.message);
  process.exitCode = 2;
}
