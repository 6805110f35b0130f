// Device selection: the one exhaustive switch from a Device name to its backend (STYLE.md). The
// CUDA backend is imported only when asked for, so machines without koffi's GPU libraries (or
// without a GPU) never load it. Asking for a device that cannot be used is a DeviceError, never a
// silent fallback; `bestDevice` picks CUDA when it works and says once when it falls back.

import type { Backend, Device, Precision } from './backend.js';
import { cpuBackend } from './cpu/backend.js';
import { DeviceError, OptionError } from './core/errors.js';

/** Code that runs on whichever backend the device gives (TypeScript's way to say "for all F, I"). */
export interface BackendUser<R> {
  run<F, I>(be: Backend<F, I>): Promise<R>;
}

/** Runs user on the device's backend; precision 'bf16' (mixed-precision training) is a CUDA option. */
export async function withBackend<R>(device: Device, user: BackendUser<R>, opts: { precision?: Precision } = {}): Promise<R> {
  const precision = opts.precision ?? 'fp32';
  switch (device) {
    case 'cpu':
      if (precision !== 'fp32') throw new OptionError(`precision '${precision}' needs --device cuda (the CPU computes and stores fp32)`);
      return user.run(cpuBackend);
    case 'cuda': {
      const { CudaBackend } = await import('./cuda/backend.js');
      return user.run(new CudaBackend(undefined, { precision }));
    }
  }
}

/** Why CUDA cannot be used here, or null when it can. */
export async function cudaUnavailable(): Promise<string | null> {
  const { findCudaLibraries, missingReason } = await import('./cuda/find.js');
  const missing = missingReason(findCudaLibraries());
  if (missing) return missing;
  try {
    const { cudaAvailability } = await import('./cuda/runtime.js');
    const a = cudaAvailability();
    return a.available ? null : a.reason;
  } catch (e) {
    return (e as Error).message;
  }
}

/** CUDA when it works, else the CPU, announced once. */
export async function bestDevice(log: (s: string) => void): Promise<Device> {
  const why = await cudaUnavailable();
  if (why === null) return 'cuda';
  log(`sparsek: using the CPU (CUDA not available: ${why})`);
  return 'cpu';
}

export function parseDevice(name: unknown): Device {
  if (name === 'cpu' || name === 'cuda') return name;
  throw new DeviceError(String(name), "expected 'cpu' or 'cuda' (WebGPU runs inference only: loadModel(dir, { device: 'webgpu' }) and the browser demo, docs/webgpu.md)");
}
