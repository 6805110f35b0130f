// Data-parallel training, the launcher side (docs/distributed.md): `sparsek train --gpus N` starts
// N worker processes (distributed-worker.ts), one per GPU, passes rank 0's ncclUniqueId to the
// others, and waits. Each worker runs the ordinary training loop (train.ts) on its B/N rows of the
// same global batch, and the gradients are averaged with NCCL after every backward, so every rank
// takes exactly the optimizer step of single-GPU training with batch B (up to rounding). Rank 0
// alone writes the run folder. A worker that fails aborts its communicator and reports; the
// launcher then stops the others (they may be blocked inside an NCCL call, where no JavaScript
// runs, so they are killed rather than asked) and throws a WorkerError with the first message.
//
// Not multi-node, not tensor or pipeline parallel, no ZeRO yet (every rank holds the full AdamW
// state). The 'ipc' collective averages through this process over Node's IPC channel instead of
// NCCL: it exists to test the launcher, sharding and averaging on machines without NCCL or with one
// GPU; it copies the gradients to the host twice a step and is never what the CLI uses.
// SPEC.md: section 7 (`sparsek train`).

import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Device } from '../backend.js';
import { OptionError, SparsekError } from '../core/errors.js';
import type { ModelConfig } from '../model/config.js';
import type { TrainConfig, TrainResult } from './train.js';

/** How gradients are averaged: NCCL on GPUs, or through the launcher (tests; any device). */
export type Collective = 'nccl' | 'ipc';

export interface DataParallelOptions {
  /** N: ranks (worker processes). */
  gpus: number;
  /** The CUDA device of each rank; default rank r on device r. Two ranks may share a device only with NCCL settings that allow it (docs/distributed.md). */
  devices?: number[];
  collective?: Collective;
  /** Extra environment of rank r's process (NCCL_* settings in tests). */
  env?: (rank: number) => Record<string, string>;
  resume?: boolean;
  /** No progress bar. */
  quiet?: boolean;
  /** Rank 0's log lines (default: stderr). */
  log?: (line: string) => void;
  /** Stop every rank and reject after this many milliseconds (tests: a hung collective must not hang the suite). */
  timeoutMs?: number;
}

/** What one rank reports at the end. */
export interface RankReport {
  rank: number;
  device: number | null;
  /** sha256 of the final parameters' bytes: equal on every rank when the ranks stayed in step. */
  paramsHash: string;
  /** The loss of every step as the rank logged it (the mean over all ranks). */
  losses: number[];
}

export interface DataParallelResult extends TrainResult {
  ranks: RankReport[];
}

/** A worker that failed (rank null: the launcher's time limit); the message is the worker's own, prefixed with its rank. */
export class WorkerError extends SparsekError {
  constructor(readonly rank: number | null, readonly workerCode: string | null, detail: string) {
    super('E_WORKER', `data-parallel ${rank === null ? 'training' : `rank ${rank}`} failed: ${detail}`);
  }
}

/**
 * Checks a data-parallel request before anything starts; throws OptionError naming the flag.
 *   gpus >= 1; the 'nccl' collective needs device 'cuda'; batch % gpus == 0 (each rank takes
 *   batch / gpus rows); no --minutes with more than one rank (the ranks must agree on the step count).
 */
export function checkDataParallel(o: { gpus: unknown; device: Device | string; batch: number; minutes: number | null; collective?: Collective }): number {
  const n = o.gpus;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) throw new OptionError(`--gpus: expected an integer >= 1 (one worker process per GPU), got ${String(n)}`);
  if ((o.collective ?? 'nccl') === 'nccl' && o.device !== 'cuda') {
    throw new OptionError(`--gpus ${n} trains on CUDA devices through NCCL; it cannot be combined with --device ${o.device} (use --device cuda, or leave --gpus out)`);
  }
  if (o.batch % n !== 0) throw new OptionError(`--batch ${o.batch} must be a multiple of --gpus ${n}: each GPU takes batch / gpus rows of the global batch`);
  if (o.minutes !== null && n > 1) throw new OptionError(`--minutes cannot be used with --gpus ${n}: the ranks must agree on the number of steps up front (use --steps)`);
  return n;
}

/** Launcher → worker: the job, then (ranks > 0, NCCL) rank 0's unique id; (ipc) each step's averages. */
export type ToWorker =
  | { type: 'start'; job: WorkerJob }
  | { type: 'id'; id: Uint8Array }
  | { type: 'reduced'; step: number; grads: Float32Array; loss: number };

/** Worker → launcher. */
export type FromWorker =
  | { type: 'log'; line: string }
  | { type: 'id'; id: Uint8Array }
  | { type: 'grad'; step: number; grads: Float32Array; loss: number }
  | { type: 'done'; result: TrainResult; paramsHash: string; losses: number[] }
  | { type: 'error'; name: string; code: string | null; message: string };

export interface WorkerJob {
  rank: number;
  world: number;
  device: number | null; // CUDA ordinal; null on the CPU
  collective: Collective;
  model: ModelConfig;
  train: TrainConfig;
  out: string;
  resume: boolean;
  quiet: boolean;
}

/** The worker's module next to this one, with this module's extension (.ts under tsx, .js in dist/). */
function workerEntry(): string {
  const self = new URL(import.meta.url);
  const ext = self.pathname.slice(self.pathname.lastIndexOf('.'));
  return fileURLToPath(new URL(`./distributed-worker${ext}`, self));
}

/**
 * The parent's Node flags minus those of the test runner and debugger: a worker of a tsx run needs
 * tsx's --import, and must not become a second test runner or grab the inspector's port.
 */
function workerExecArgv(): string[] {
  const out: string[] = [];
  for (const a of process.execArgv) if (!/^--(test|inspect|watch)/.test(a)) out.push(a);
  return out;
}

/** The worker's environment: ours (less the test runner's marker, which would make it a test file), the caller's extras, the worker flag. */
function workerEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra, SPARSEK_DP_WORKER: '1' };
  delete env.NODE_TEST_CONTEXT;
  return env;
}

/**
 * Trains with N worker processes, data-parallel; resolves with rank 0's result and every rank's
 * report once all have finished, or rejects with the first worker's error (WorkerError) after
 * stopping the others. Rank 0 writes `out` exactly as train() would.
 * @example
 *   await trainDataParallel(PRESETS.demo, { ...DEFAULT_TRAIN, device: 'cuda', batch: 16 }, 'runs/dp', { gpus: 2 });
 */
export async function trainDataParallel(mc: ModelConfig, tc: TrainConfig, out: string, o: DataParallelOptions): Promise<DataParallelResult> {
  const collective = o.collective ?? 'nccl';
  const world = checkDataParallel({ gpus: o.gpus, device: tc.device, batch: tc.batch, minutes: tc.minutes, collective });
  const devices = o.devices ?? Array.from({ length: world }, (_, r) => r);
  if (devices.length !== world || devices.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new OptionError(`devices: expected ${world} CUDA device indices (one per rank), got ${JSON.stringify(devices)}`);
  }
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const entry = workerEntry();
  const execArgv = workerExecArgv();
  return new Promise<DataParallelResult>((resolve, reject) => {
    const children: ChildProcess[] = [];
    const exited: boolean[] = new Array(world).fill(false);
    const reports: (RankReport | null)[] = new Array(world).fill(null);
    let result: TrainResult | null = null;
    let failure: WorkerError | null = null;
    const ipc = new IpcReducer(world);

    const fail = (rank: number | null, code: string | null, message: string) => {
      if (failure !== null) return;
      failure = new WorkerError(rank, code, message);
      for (let r = 0; r < world; r++) {
        if (exited[r]) continue;
        const c = children[r];
        c.kill('SIGTERM');
        setTimeout(() => { if (!exited[r]) c.kill('SIGKILL'); }, 5000).unref();
      }
    };
    const timer = o.timeoutMs === undefined ? null : setTimeout(() => fail(null, null, `stopped after ${o.timeoutMs} ms (timeoutMs)`), o.timeoutMs);
    const settle = () => {
      if (!exited.every(Boolean)) return;
      if (timer !== null) clearTimeout(timer);
      if (failure !== null) reject(failure);
      else resolve({ ...result!, ranks: reports.map((x) => x!) });
    };
    const send = (rank: number, m: ToWorker) => {
      if (!exited[rank] && children[rank].connected) children[rank].send(m);
    };

    for (let rank = 0; rank < world; rank++) {
      const device = tc.device === 'cuda' ? devices[rank] : null;
      const child = fork(entry, [], {
        execArgv,
        env: workerEnv(o.env?.(rank) ?? {}),
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        serialization: 'advanced', // typed arrays cross as typed arrays
      });
      children.push(child);
      child.on('message', (raw) => {
        const m = raw as FromWorker;
        switch (m.type) {
          case 'log':
            if (rank === 0) log(m.line);
            break;
          case 'id': // rank 0's unique id, for the others
            for (let r = 1; r < world; r++) send(r, { type: 'id', id: m.id });
            break;
          case 'grad': {
            try {
              const done = ipc.add(rank, m.step, m.grads, m.loss);
              if (done !== null) for (let r = 0; r < world; r++) send(r, { type: 'reduced', step: m.step, ...done });
            } catch (e) {
              fail(rank, null, (e as Error).message);
            }
            break;
          }
          case 'done':
            reports[rank] = { rank, device, paramsHash: m.paramsHash, losses: m.losses };
            if (rank === 0) result = m.result;
            break;
          case 'error':
            fail(rank, m.code, m.message);
            break;
        }
      });
      child.on('error', (e) => fail(rank, null, `worker process: ${e.message}`));
      // 'close', not 'exit': it comes after the IPC channel has delivered the worker's last messages.
      child.on('close', (code, signal) => {
        exited[rank] = true;
        if (reports[rank] === null) fail(rank, null, `worker exited (${signal ?? `code ${code}`}) before finishing`);
        settle();
      });
      const job: WorkerJob = { rank, world, device, collective, model: mc, train: tc, out, resume: o.resume === true, quiet: o.quiet === true };
      child.send({ type: 'start', job } satisfies ToWorker);
    }
  });
}

/**
 * The 'ipc' collective's arithmetic: per step, the mean over ranks of the gradients (summed in
 * float64 in rank order, then rounded once) and of the losses. Not NCCL's order of summation; equal
 * to it up to float32 rounding.
 */
export class IpcReducer {
  private readonly pending = new Map<number, { grads: (Float32Array | null)[]; losses: number[]; count: number }>();

  constructor(readonly world: number) {}

  /** Adds rank's contribution to step; returns the means once every rank has given one, else null. */
  add(rank: number, step: number, grads: Float32Array, loss: number): { grads: Float32Array; loss: number } | null {
    let p = this.pending.get(step);
    if (p === undefined) {
      p = { grads: new Array(this.world).fill(null), losses: new Array(this.world).fill(0), count: 0 };
      this.pending.set(step, p);
    }
    if (p.grads[rank] !== null) throw new OptionError(`rank ${rank} sent the gradients of step ${step} twice`);
    const first = p.grads.find((g) => g !== null);
    if (first && first.length !== grads.length) throw new OptionError(`rank ${rank} sent ${grads.length} gradients, another rank ${first.length}`);
    p.grads[rank] = grads;
    p.losses[rank] = loss;
    p.count++;
    if (p.count < this.world) return null;
    this.pending.delete(step);
    const n = p.grads[0]!.length;
    const mean = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let r = 0; r < this.world; r++) s += p.grads[r]![i];
      mean[i] = s / this.world;
    }
    return { grads: mean, loss: p.losses.reduce((a, b) => a + b, 0) / this.world };
  }
}
