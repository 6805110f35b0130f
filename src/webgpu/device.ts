// Getting a WebGPU device, in the browser (navigator.gpu) or from any GPU object (node.ts passes
// Dawn's). Browser-safe. The device asks for the adapter's largest storage bindings, since the
// defaults (128 MiB) are below what a vocabulary-sized matrix of a real model needs.
/// <reference types="@webgpu/types" />

import { DeviceError } from '../core/errors.js';
import { GpuRuntime } from './runtime.js';

/** A runtime on the first adapter of `gpu`; `hint` is appended to the error when there is none. */
export async function requestRuntime(gpu: GPU, hint = ''): Promise<GpuRuntime> {
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new DeviceError('webgpu', `no WebGPU adapter found${hint}`);
  const lim = adapter.limits;
  const device = await adapter.requestDevice({
    requiredLimits: {
      maxStorageBufferBindingSize: lim.maxStorageBufferBindingSize,
      maxBufferSize: lim.maxBufferSize,
      maxStorageBuffersPerShaderStage: Math.min(8, lim.maxStorageBuffersPerShaderStage),
    },
  });
  const info = adapter.info;
  const name = [info?.vendor, info?.architecture, info?.device, info?.description].filter((s) => s).join(' ') || 'unknown adapter';
  return new GpuRuntime(device, name);
}

/** A runtime from the browser's navigator.gpu. */
export async function browserRuntime(): Promise<GpuRuntime> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (!nav?.gpu) throw new DeviceError('webgpu', 'this browser has no navigator.gpu (WebGPU is off or unsupported)');
  return requestRuntime(nav.gpu);
}
