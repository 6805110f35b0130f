// One rank of data-parallel training, the worker side (docs/distributed.md): the process that
// trainDataParallel (distributed.ts) forks. It takes its job over IPC, selects its GPU, joins the
// NCCL communicator with rank 0's unique id, and runs the ordinary training loop with a
// DataParallel hook that all-reduces the gradients after each backward. On failure it aborts its
// communicator, reports the error and exits non-zero. Also the two gradient averagers: NcclSync
// (what `train --gpus` uses) and IpcSync (through the launcher; tests only).
// The module does nothing when imported, unless it is a forked worker (SPARSEK_DP_WORKER=1).
// SPEC.md: section 7 (`sparsek train`).

import { createHash } from 'node:crypto';
import type { Backend } from '../backend.js';
import { DeviceError, SparsekError } from '../core/errors.js';
import { CudaBackend, CudaBuffer } from '../cuda/backend.js';
import { loadNccl, ncclUniqueId, NcclComm } from '../cuda/nccl.js';
import { cudaRuntime, selectCudaDevice } from '../cuda/runtime.js';
import { train } from './train.js';
import type { DataParallel } from './train.js';
import type { FromWorker, ToWorker, WorkerJob } from './distributed.js';

/** sha256 of a float buffer's bytes (the ranks' final weights must agree bit for bit). */
function hashOf(x: Float32Array): string {
  return createHash('sha256').update(new Uint8Array(x.buffer, x.byteOffset, x.byteLength)).digest('hex');
}

/**
 * Gradient averaging with NCCL: one in-place ncclAllReduce(ncclAvg) of the flat gradient buffer and
 * one of the loss, grouped, queued on the backend's stream after the backward kernels. All ranks
 * receive the same bytes (NCCL's all-reduce ends by broadcasting each reduced chunk), so the
 * identical AdamW steps keep the weights identical without ever sending them.
 */
export class NcclSync implements DataParallel {
  paramsHash = '';

  constructor(readonly comm: NcclComm) {}

  get rank(): number {
    return this.comm.rank;
  }

  get world(): number {
    return this.comm.world;
  }

  async reduce<F, I>(be: Backend<F, I>, grads: F, loss: number): Promise<number> {
    if (!(be instanceof CudaBackend) || !(grads instanceof CudaBuffer)) {
      throw new DeviceError(be.device, 'NCCL averages CUDA device buffers: data-parallel training with NCCL needs --device cuda');
    }
    if (grads.dtype !== 'f32') throw new DeviceError('cuda', `gradients must be float32 for the NCCL all-reduce, got ${grads.dtype}`);
    const cuda: CudaBackend = be;
    const scalar = cuda.alloc(1);
    try {
      cuda.upload(scalar, Float32Array.of(loss));
      const stream = cuda.rt.stream;
      this.comm.group(() => {
        this.comm.allReduceMean(grads.ptr, grads.length, stream);
        this.comm.allReduceMean(scalar.ptr, 1, stream);
      });
      return cuda.download(scalar)[0]; // synchronizes: the gradients are averaged too
    } finally {
      cuda.free(scalar);
    }
  }

  finish<F, I>(be: Backend<F, I>, params: F): void {
    this.paramsHash = hashOf(be.download(params));
  }
}

/** Gradient averaging through the launcher over IPC (IpcReducer): any device, tiny models, tests. */
export class IpcSync implements DataParallel {
  paramsHash = '';
  private step = 0;

  constructor(readonly rank: number, readonly world: number, private readonly next: (type: 'reduced') => Promise<ToWorker>) {}

  async reduce<F, I>(be: Backend<F, I>, grads: F, loss: number): Promise<number> {
    const step = ++this.step;
    send({ type: 'grad', step, grads: Float32Array.from(be.download(grads)), loss });
    const m = await this.next('reduced');
    if (m.type !== 'reduced' || m.step !== step) throw new DeviceError(be.device, `expected the averages of step ${step} from the launcher`);
    be.upload(grads, m.grads);
    return m.loss;
  }

  finish<F, I>(be: Backend<F, I>, params: F): void {
    this.paramsHash = hashOf(be.download(params));
  }
}

function send(m: FromWorker): void {
  process.send!(m);
}

/** Messages from the launcher, in arrival order, taken one by one by type. */
class Inbox {
  private readonly queue: ToWorker[] = [];
  private waiting: { type: ToWorker['type']; resolve: (m: ToWorker) => void } | null = null;

  push(m: ToWorker): void {
    if (this.waiting !== null && this.waiting.type === m.type) {
      const w = this.waiting;
      this.waiting = null;
      w.resolve(m);
    } else {
      this.queue.push(m);
    }
  }

  next(type: ToWorker['type']): Promise<ToWorker> {
    const i = this.queue.findIndex((m) => m.type === type);
    if (i >= 0) return Promise.resolve(this.queue.splice(i, 1)[0]);
    return new Promise((resolve) => { this.waiting = { type, resolve }; });
  }
}

let finished = false;

async function runWorker(job: WorkerJob, inbox: Inbox): Promise<void> {
  const { rank, world } = job;
  let comm: NcclComm | null = null;
  try {
    let sync: NcclSync | IpcSync;
    if (job.collective === 'nccl') {
      // The primary context must be current before NCCL: ncclCommInitRank binds to the current device.
      selectCudaDevice(job.device ?? 0);
      cudaRuntime();
      const lib = loadNccl();
      let id: Uint8Array;
      if (rank === 0) {
        id = ncclUniqueId(lib);
        send({ type: 'id', id });
      } else {
        const m = await inbox.next('id');
        if (m.type !== 'id') throw new DeviceError('cuda', 'expected the NCCL unique id from the launcher');
        id = new Uint8Array(m.id);
      }
      comm = NcclComm.init(id, world, rank, lib); // blocks until all ranks have joined
      sync = new NcclSync(comm);
    } else {
      sync = new IpcSync(rank, world, (type) => inbox.next(type));
    }
    const losses: number[] = [];
    const result = await train(job.model, job.train, job.out, {
      resume: job.resume,
      quiet: job.quiet || rank !== 0,
      log: rank === 0 ? (line) => send({ type: 'log', line }) : () => undefined,
      parallel: sync,
      onStep: (_, metric) => { losses.push(metric.loss ?? NaN); },
    });
    comm?.destroy();
    comm = null;
    finished = true;
    process.send!({ type: 'done', result, paramsHash: sync.paramsHash, losses } satisfies FromWorker, () => process.exit(0));
  } catch (err) {
    finished = true;
    comm?.abort();
    const e = err instanceof Error ? err : new Error(String(err));
    const code = err instanceof SparsekError ? err.code : null;
    // A non-sparsek error is a bug somewhere: keep its stack for the report.
    const message = err instanceof SparsekError ? e.message : `${e.name}: ${e.message}\n${e.stack ?? ''}`;
    process.send!({ type: 'error', name: e.name, code, message } satisfies FromWorker, () => process.exit(1));
  }
}

if (process.env.SPARSEK_DP_WORKER === '1' && process.send !== undefined) {
  const inbox = new Inbox();
  let started = false;
  process.on('message', (raw) => {
    const m = raw as ToWorker;
    if (m.type === 'start' && !started) {
      started = true;
      void runWorker(m.job, inbox);
    } else {
      inbox.push(m);
    }
  });
  // The launcher died: nobody is left to report to, and the other ranks are gone or going.
  process.on('disconnect', () => { if (!finished) process.exit(1); });
}
