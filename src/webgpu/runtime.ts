// The WebGPU runtime: one GPUDevice, storage tensors, WGSL kernels compiled once and cached by
// source, and a command stream that is recorded as work is asked for and submitted only when a
// result must come back. Readback is asynchronous in WebGPU (mapAsync), so this runtime is not a
// Backend (src/backend.ts, whose download is synchronous): the inference code on top of it
// (model.ts, decode.ts) enqueues a whole forward pass or decoding step and awaits one read at
// its end. Browser-safe: no node modules here (node.ts creates the device under Node).
//
// Ordering rules the callers rely on (WebGPU's queue timeline):
// - dispatches and copies run in the order they were asked for;
// - write() first submits what is pending, then writes, so work asked for earlier sees the old
//   contents and work asked for later the new ones;
// - each dispatch's scalars go to their own 256-byte slot of a uniform arena that is written
//   just before its batch is submitted.
// GPU errors (validation, out of memory) are caught in error scopes and thrown, as DeviceError,
// from the next read(): WebGPU reports them asynchronously.
/// <reference types="@webgpu/types" />

import { DeviceError } from '../core/errors.js';

/** A float32 (or int32) buffer in device memory; length in 4-byte elements. */
export interface GpuTensor {
  readonly buffer: GPUBuffer;
  readonly length: number;
  readonly label: string;
}

/** A compiled compute pipeline and its name (for error messages). */
export interface Kernel {
  readonly name: string;
  readonly pipeline: GPUComputePipeline;
}

/** Scalars of one dispatch, in the order of the kernel's `struct P` fields (4 bytes each). */
export type Scalar = { u: number } | { i: number } | { f: number };
export const u32 = (u: number): Scalar => ({ u });
export const i32 = (i: number): Scalar => ({ i });
export const f32 = (f: number): Scalar => ({ f });

const SLOT = 256; // bytes per dispatch in the uniform arena (minUniformBufferOffsetAlignment <= 256)
const ARENA_SLOTS = 1024;

export class GpuRuntime {
  private readonly kernels = new Map<string, Promise<Kernel>>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private readonly arena: GPUBuffer;
  private readonly arenaHost = new ArrayBuffer(SLOT * ARENA_SLOTS);
  private slots = 0;
  private bytes = 0;
  private destroyed = false;

  constructor(readonly device: GPUDevice, readonly adapterName = 'webgpu') {
    this.arena = device.createBuffer({ label: 'uniform arena', size: SLOT * ARENA_SLOTS, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
  }

  /** Bytes of the tensors allocated and not yet freed. */
  get allocatedBytes(): number {
    return this.bytes;
  }

  /** A zero-filled tensor of n 4-byte elements (WebGPU zero-initialises buffers). */
  tensor(n: number, label: string): GpuTensor {
    // A zero-size binding is invalid: empty tensors (K = 0, W = 0) get one element.
    const length = Math.max(1, Math.ceil(n));
    const size = 4 * length;
    if (size > this.device.limits.maxStorageBufferBindingSize) {
      throw new DeviceError('webgpu', `tensor '${label}' needs ${size} bytes, above this device's maxStorageBufferBindingSize (${this.device.limits.maxStorageBufferBindingSize})`);
    }
    const buffer = this.device.createBuffer({ label, size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    this.bytes += size;
    return { buffer, length, label };
  }

  free(t: GpuTensor): void {
    this.bytes -= 4 * t.length;
    t.buffer.destroy();
  }

  /** dst[offset ..] = data, after the work asked for so far. */
  write(dst: GpuTensor, data: Float32Array | Int32Array | Uint32Array, offset = 0): void {
    if (offset + data.length > dst.length) throw new RangeError(`write of ${data.length} elements at ${offset} overruns '${dst.label}' (${dst.length})`);
    this.submit();
    // Dawn refuses SharedArrayBuffer sources (the CPU's thread pool allocates those): copy first.
    const src = typeof SharedArrayBuffer !== 'undefined' && data.buffer instanceof SharedArrayBuffer ? data.slice() : data;
    this.device.queue.writeBuffer(dst.buffer, offset * 4, src.buffer as ArrayBuffer, src.byteOffset, src.byteLength);
  }

  /**
   * The compute pipeline for a WGSL source (entry point `main`), compiled once per source. A
   * compile error throws DeviceError with the compiler's messages and the numbered source.
   */
  kernel(name: string, source: string): Promise<Kernel> {
    let k = this.kernels.get(source);
    if (!k) {
      k = this.compile(name, source);
      this.kernels.set(source, k);
    }
    return k;
  }

  private async compile(name: string, source: string): Promise<Kernel> {
    const module = this.device.createShaderModule({ label: name, code: source });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === 'error');
    if (errors.length > 0) throw new DeviceError('webgpu', `kernel '${name}' does not compile:\n${formatLog(errors, source)}`);
    try {
      const pipeline = await this.device.createComputePipelineAsync({ label: name, layout: 'auto', compute: { module, entryPoint: 'main' } });
      return { name, pipeline };
    } catch (e) {
      throw new DeviceError('webgpu', `kernel '${name}' has no valid pipeline: ${(e as Error).message}\n${numbered(source)}`);
    }
  }

  /**
   * Records kernel k over `groups` workgroups, with its scalars as binding 0 (a uniform struct)
   * and `tensors` as bindings 1, 2, ... in order.
   */
  dispatch(k: Kernel, scalars: Scalar[], tensors: GpuTensor[], groups: [number, number?, number?]): void {
    if (this.destroyed) throw new DeviceError('webgpu', 'the runtime was destroyed');
    if (scalars.length * 4 > SLOT) throw new RangeError(`kernel '${k.name}': too many scalars`);
    if (this.slots === ARENA_SLOTS) this.submit();
    const slot = this.slots++;
    const view = new DataView(this.arenaHost, slot * SLOT, SLOT);
    scalars.forEach((s, i) => {
      if ('u' in s) view.setUint32(4 * i, s.u, true);
      else if ('i' in s) view.setInt32(4 * i, s.i, true);
      else view.setFloat32(4 * i, s.f, true);
    });
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: this.arena, offset: slot * SLOT, size: Math.max(16, Math.ceil(scalars.length / 4) * 16) } }];
    tensors.forEach((t, i) => entries.push({ binding: i + 1, resource: { buffer: t.buffer } }));
    const bindGroup = this.device.createBindGroup({ label: k.name, layout: k.pipeline.getBindGroupLayout(0), entries });
    const pass = this.computePass();
    pass.setPipeline(k.pipeline);
    pass.setBindGroup(0, bindGroup);
    const [x, y = 1, z = 1] = groups;
    const max = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) throw new DeviceError('webgpu', `kernel '${k.name}': ${x} x ${y} x ${z} workgroups exceed the limit of ${max} per dimension`);
    if (x > 0 && y > 0 && z > 0) pass.dispatchWorkgroups(x, y, z);
  }

  /** dst[dstOff .. +n) = src[srcOff .. +n), in order with the dispatches. dst and src must differ. */
  copy(dst: GpuTensor, dstOff: number, src: GpuTensor, srcOff: number, n: number): void {
    if (n === 0) return;
    this.endPass();
    this.commandEncoder().copyBufferToBuffer(src.buffer, srcOff * 4, dst.buffer, dstOff * 4, n * 4);
  }

  /** Submits the work recorded so far. */
  submit(): void {
    this.endPass();
    if (!this.encoder) return;
    if (this.slots > 0) this.device.queue.writeBuffer(this.arena, 0, this.arenaHost, 0, this.slots * SLOT);
    this.device.queue.submit([this.encoder.finish()]);
    this.encoder = null;
    this.slots = 0;
  }

  /** Submits pending work and reads src[offset .. offset + n) back, as float32 (int32 reads: reinterpret the bytes). */
  async read(src: GpuTensor, n = src.length, offset = 0): Promise<Float32Array> {
    const staging = this.device.createBuffer({ label: `read ${src.label}`, size: Math.max(4, n * 4), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    if (n > 0) {
      this.endPass();
      this.commandEncoder().copyBufferToBuffer(src.buffer, offset * 4, staging, 0, n * 4);
    }
    this.submit();
    await this.checkErrors();
    await staging.mapAsync(GPUMapMode.READ);
    const out = new Float32Array(staging.getMappedRange().slice(0, n * 4));
    staging.unmap();
    staging.destroy();
    return out;
  }

  /** Throws the first validation or out-of-memory error since the last check. */
  private async checkErrors(): Promise<void> {
    const validation = await this.device.popErrorScope();
    const oom = await this.device.popErrorScope();
    this.device.pushErrorScope('out-of-memory');
    this.device.pushErrorScope('validation');
    const e = validation ?? oom;
    if (e) throw new DeviceError('webgpu', `GPU error: ${e.message}`);
  }

  /** Releases the device (and so every tensor). */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.endPass();
    this.encoder = null;
    this.device.destroy();
  }

  private commandEncoder(): GPUCommandEncoder {
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    return this.encoder;
  }

  private computePass(): GPUComputePassEncoder {
    if (!this.pass) this.pass = this.commandEncoder().beginComputePass();
    return this.pass;
  }

  private endPass(): void {
    if (this.pass) this.pass.end();
    this.pass = null;
  }
}

/** Workgroup counts for `n` items of `per` each, folded into 2D when above the per-dimension limit. */
export function groups1d(n: number, per: number, max = 65535): [number, number] {
  const g = Math.ceil(n / per);
  if (g <= max) return [g, 1];
  return [max, Math.ceil(g / max)];
}

function numbered(source: string): string {
  return source.split('\n').map((l, i) => `${String(i + 1).padStart(4)}  ${l}`).join('\n');
}

function formatLog(messages: readonly GPUCompilationMessage[], source: string): string {
  return messages.map((m) => `  line ${m.lineNum}:${m.linePos}: ${m.message}`).join('\n') + '\n' + numbered(source);
}
