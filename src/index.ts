// sparsek: SparseK attention in TypeScript (Lou et al., arXiv 2406.16747).
// The package root: the CPU reference functions of SPEC.md section 7 and the typed errors.

export { sparsek, sparsekRows, sparsekBackward, sparsekBackwardRows } from './cpu/kernels/sparsek.js';
export type { SparsekAlgorithm } from './cpu/kernels/sparsek.js';
export { selectCausal, CausalSelector } from './cpu/kernels/selection.js';
export { sparsekAttention, sparsekAttentionBackward } from './cpu/kernels/attention.js';
export type { AttentionShape, SelectOptions } from './core/check.js';
export {
  SparsekError, ShapeError, ArgumentError, NonFiniteError, OptionError, CheckpointError, DataError, DeviceError, DivergenceError,
} from './core/errors.js';
export {
  attentionForward, attentionBackward, baselinePattern, baselineKinds, checkBaselineOptions,
} from './cpu/kernels/baselines.js';
export type { BaselineKind, BaselineOptions, BaselineParams } from './cpu/kernels/baselines.js';
export type { KeyPattern } from './cpu/kernels/attention.js';
export { loadModel } from './model/load.js';
export type { Model, LoadModelOptions } from './model/load.js';
// WebGPU inference (docs/webgpu.md): an async runtime of its own (readback is asynchronous there).
export { WebGpuModel, checkWebGpuConfig } from './webgpu/model.js';
export { WebGpuDecoder } from './webgpu/decode.js';
export { nodeRuntime, webgpuUnavailable } from './webgpu/node.js';
export { browserRuntime } from './webgpu/device.js';
export { runFromFiles, parseSafetensors } from './webgpu/files.js';
export type { GpuRuntime } from './webgpu/runtime.js';
