// The browser entry of the WebGPU backend: everything here runs without node modules (the
// package root, src/index.ts, also exports these, plus nodeRuntime for Dawn under Node).
export { browserRuntime, requestRuntime } from './device.js';
export { GpuRuntime } from './runtime.js';
export { WebGpuModel, checkWebGpuConfig } from './model.js';
export { WebGpuDecoder } from './decode.js';
export { runFromFiles, parseSafetensors } from './files.js';
export type { RunFiles, LoadedRun } from './files.js';
