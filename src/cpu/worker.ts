// Entry of a kernel worker thread (started by threads.ts): runs one part of a kernel call on the
// shared arrays, then counts down the caller's PENDING flag and wakes it. Never throws past a job:
// a failure is written to the shared error bytes so the blocked caller can rethrow it.
// Not a module to import: it starts listening as soon as it is loaded.

import { parentPort, workerData } from 'node:worker_threads';
import { matmulBackwardPart, matmulForwardPart } from './kernels/matmul.js';
import { ERROR_BYTES, FAILED, Job, PENDING, READY, WorkerInit } from './threads.js';

const { ctl, error, index } = workerData as WorkerInit;
const port = parentPort!;

port.on('message', ({ task, part, parts }: Job) => {
  try {
    switch (task.op) {
      case 'matmulForward': matmulForwardPart(task, part, parts); break;
      case 'matmulBackward': matmulBackwardPart(task, part, parts); break;
      default: {
        const never: never = task;
        throw new Error(`unknown task ${JSON.stringify(never)}`);
      }
    }
  } catch (e) {
    const bytes = new TextEncoder().encode(e instanceof Error ? e.stack ?? e.message : String(e));
    error.fill(0);
    error.set(bytes.subarray(0, ERROR_BYTES - 1));
    Atomics.store(ctl, FAILED, 1);
  } finally {
    Atomics.sub(ctl, PENDING, 1);
    Atomics.notify(ctl, PENDING);
  }
});
Atomics.store(ctl, READY + index, 1);
