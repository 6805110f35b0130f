// The CPU kernels' worker pool: one kernel call split into parts, part 0 on the calling thread and
// the others on node:worker_threads workers that share the arrays through SharedArrayBuffer. The
// caller stays synchronous (the model code is): it posts the parts, runs its own, and blocks in
// Atomics.wait until the workers have counted down a shared flag. Each part writes a disjoint slice
// of the outputs with the single-threaded kernel, so results are bit-identical to one thread.
// Not a scheduler or a general task queue: one fork-join at a time, kernels named in `Task`.
// SPEC.md: no section of its own (the trainer of section 8 runs faster; nothing observable changes).
//
// Threads: min(os.availableParallelism(), SPARSEK_THREADS if set); 1 means no workers at all. The
// pool starts on the first allocF32 or kernel call that wants it, so the workers load while the
// model is being built. A part only goes to a worker that has reported ready (a shared flag, read
// without the event loop, which a synchronous training loop never turns), so nothing waits for
// startup and a worker that cannot start just leaves its share to the caller. Workers are
// unref'd: they never keep the process (or a test runner's child) alive.

import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { OptionError } from '../core/errors.js';
import type { MatmulBackwardTask, MatmulForwardTask } from './kernels/matmul.js';

/** One kernel call, as plain data: its arrays are SharedArrayBuffer views, its sizes numbers. */
export type Task = MatmulForwardTask | MatmulBackwardTask;

/** What a worker receives: run part `part` of `parts` of `task`. */
export interface Job {
  task: Task;
  part: number;
  parts: number;
}

/** Shared state between the caller and the workers (one Int32Array over a SharedArrayBuffer). */
export const PENDING = 0; // parts posted and not yet finished
export const FAILED = 1; // 1 when a worker's part threw; its message is in the error bytes
export const READY = 2; // READY + i: 1 once worker i listens for jobs
export const ERROR_BYTES = 1024;

/** What each worker gets as workerData. */
export interface WorkerInit {
  ctl: Int32Array; // (READY + workers)
  error: Uint8Array; // (ERROR_BYTES) UTF-8 message of the last failure
  index: number;
}

interface Pool {
  workers: Worker[];
  retired: boolean[]; // worker i failed to start or stopped
  ctl: Int32Array;
  error: Uint8Array;
}

let threads = 0; // 0 until read from the environment
let pool: Pool | null = null;

/** Threads the kernels may use: min(os.availableParallelism(), SPARSEK_THREADS). */
export function threadCount(): number {
  if (threads === 0) {
    const cores = os.availableParallelism();
    const env = process.env.SPARSEK_THREADS;
    if (env === undefined || env === '') {
      threads = cores;
    } else {
      const n = Number(env);
      if (!Number.isInteger(n) || n < 1) {
        throw new OptionError(`SPARSEK_THREADS: expected a positive integer, got ${JSON.stringify(env)}`);
      }
      threads = Math.min(cores, n);
    }
  }
  return threads;
}

/**
 * A zeroed Float32Array of n elements, backed by a SharedArrayBuffer when the kernels run on more
 * than one thread (so that they can split work on it), by a plain ArrayBuffer otherwise.
 * @example
 *   const flat = allocF32(nParams); // the model's parameters, shareable with the workers
 */
export function allocF32(n: number): Float32Array {
  if (threadCount() === 1) return new Float32Array(n);
  startPool();
  return new Float32Array(new SharedArrayBuffer(4 * n));
}

/**
 * How many parts to split a kernel call into: 1 (run it inline) when the pool has one thread, when
 * the call is too small to pay for the hand-off, or when an array is not shared; otherwise the
 * caller plus the workers that are ready, at most maxParts.
 */
export function partsFor(work: number, maxParts: number, arrays: (Float32Array | null)[]): number {
  if (work < MIN_WORK || maxParts < 2 || threadCount() === 1) return 1;
  for (const a of arrays) if (a !== null && !(a.buffer instanceof SharedArrayBuffer)) return 1;
  const p = startPool();
  let parts = 1;
  for (let i = 0; i < p.workers.length && parts < maxParts; i++) if (Atomics.load(p.ctl, READY + i) === 1) parts++;
  return parts;
}
// Multiply-adds below which a call runs inline. A fork-join costs about 50 us on the 2-core dev
// VM (a message to the worker, a futex wake-up); 2 threads broke even at about 5e5 multiply-adds
// forward and 2.5e5 backward (C = OC = 128), so 1e6 leaves a margin for a busy machine.
const MIN_WORK = 1e6;

/**
 * Runs parts 1 .. parts-1 of task on workers and part 0 inline through `own`, and returns when all
 * are done. Rethrows a worker's failure (after every part has finished: none is left writing).
 */
export function forkJoin<T extends Task>(task: T, parts: number, own: (task: T, part: number, parts: number) => void): void {
  const p = startPool();
  const { ctl } = p;
  const ready: number[] = [];
  for (let i = 0; i < p.workers.length && ready.length < parts - 1; i++) if (Atomics.load(ctl, READY + i) === 1) ready.push(i);
  if (ready.length !== parts - 1) throw new Error(`forkJoin: ${parts - 1} parts for ${ready.length} ready workers (call partsFor first)`);
  Atomics.store(ctl, FAILED, 0);
  Atomics.store(ctl, PENDING, parts - 1);
  for (let k = 0; k < ready.length; k++) {
    const job: Job = { task, part: k + 1, parts };
    p.workers[ready[k]].postMessage(job);
  }
  try {
    own(task, 0, parts);
  } finally {
    for (let v = Atomics.load(ctl, PENDING); v !== 0; v = Atomics.load(ctl, PENDING)) Atomics.wait(ctl, PENDING, v);
  }
  if (Atomics.load(ctl, FAILED) !== 0) {
    const end = p.error.indexOf(0);
    const msg = new TextDecoder().decode(p.error.slice(0, end < 0 ? ERROR_BYTES : end));
    throw new Error(`${task.op}: a worker thread failed: ${msg}`);
  }
}

/**
 * Resolves, with the number of threads that will take parts, once every worker is ready or has
 * failed (tests and benchmarks; the kernels never wait for this).
 */
export async function whenReady(timeoutMs = 30_000): Promise<number> {
  if (threadCount() === 1) return 1;
  const p = startPool();
  const t0 = Date.now();
  for (;;) {
    let ready = 0, retired = 0;
    for (let i = 0; i < p.workers.length; i++) {
      ready += Atomics.load(p.ctl, READY + i);
      if (p.retired[i]) retired++;
    }
    if (ready + retired === p.workers.length) return ready + 1;
    if (Date.now() - t0 > timeoutMs) throw new Error(`worker threads: ${ready} of ${p.workers.length} ready after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function startPool(): Pool {
  if (pool !== null) return pool;
  const n = threadCount() - 1;
  const ctl = new Int32Array(new SharedArrayBuffer(4 * (READY + n)));
  const error = new Uint8Array(new SharedArrayBuffer(ERROR_BYTES));
  const entry = workerEntry();
  const workers: Worker[] = [];
  const retired: boolean[] = [];
  let warned = false;
  for (let i = 0; i < n; i++) {
    const init: WorkerInit = { ctl, error, index: i };
    // execArgv: [] — the worker needs none of the parent's flags (its entry registers tsx itself
    // when running from source), and inheriting --import of a .ts file would fail to load.
    const w = new Worker(entry, { workerData: init, name: `sparsek-kernels-${i}`, execArgv: [] });
    // A worker that fails to start or dies gets no more parts; the caller does its share. Events
    // only arrive between the caller's synchronous runs, never while it waits on a fork-join.
    const retire = (why: string) => {
      Atomics.store(ctl, READY + i, 0);
      retired[i] = true;
      if (!warned) {
        warned = true;
        process.emitWarning(`sparsek: kernel worker ${i} stopped (${why}); its share runs on the calling thread`);
      }
    };
    w.on('error', (e) => retire(e instanceof Error ? e.message : String(e)));
    w.on('exit', (code) => retire(`exit code ${code}`));
    w.unref();
    workers.push(w);
    retired.push(false);
  }
  pool = { workers, retired, ctl, error };
  return pool;
}

/**
 * The worker's module next to this one, with this module's extension: worker.js when running from
 * dist/, worker.ts under tsx. tsx registers its loader on the main thread only (privatenumber/tsx
 * issue 354: `--import tsx` inherited through execArgv does nothing in a worker on Node 20), so a
 * .ts worker is started from a two-line bootstrap that registers tsx and then imports it.
 */
function workerEntry(): URL {
  const self = new URL(import.meta.url);
  const ext = self.pathname.slice(self.pathname.lastIndexOf('.'));
  const file = new URL(`./worker${ext}`, self);
  if (ext !== '.ts') return file;
  let api: string;
  try {
    api = import.meta.resolve('tsx/esm/api');
  } catch {
    return file; // no tsx: a Node that strips types itself can load the .ts directly
  }
  const code = `import { register } from ${JSON.stringify(api)};\nregister();\nawait import(${JSON.stringify(file.href)});\n`;
  return new URL(`data:text/javascript,${encodeURIComponent(code)}`);
}
