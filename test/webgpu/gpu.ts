// The WebGPU device for the tests: Dawn (npm `webgpu`) on SwiftShader, Debian chromium's CPU
// Vulkan driver, when VK_ICD_FILENAMES is not set already (CI has no GPU). When no adapter can be
// made, `skip` holds the reason and the suites skip visibly. Each test file destroys its device
// in after(). Also the shared fixtures of model.test.ts and decode.test.ts.

import fs from 'node:fs';
import { after } from 'node:test';
import { SWIFTSHADER_ICD, nodeRuntime } from '../../src/webgpu/node.js';
import type { GpuRuntime } from '../../src/webgpu/runtime.js';
import assert from 'node:assert/strict';
import { Gpt } from '../../src/model/gpt.js';
import { checkConfig } from '../../src/model/config.js';
import type { ModelConfig } from '../../src/model/config.js';
import { fillParams, tinyConfig } from '../model/fixtures.js';

if (!process.env.VK_ICD_FILENAMES && fs.existsSync(SWIFTSHADER_ICD)) process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;

/** The device of this test file, or null and the reason to skip. */
export async function testRuntime(): Promise<{ rt: GpuRuntime | null; skip: string | false }> {
  try {
    const rt = await nodeRuntime();
    after(() => rt.destroy());
    return { rt, skip: false };
  } catch (e) {
    return { rt: null, skip: `no WebGPU device: ${(e as Error).message}` };
  }
}

/** The largest |x| of a (for error bounds relative to a row's or tensor's scale). */
export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** max over rows of max_v |got - want| / max_v |want|. */
export function worstRowError(got: ArrayLike<number>, want: ArrayLike<number>, V: number): number {
  assert.equal(got.length, want.length, 'logits length');
  let worst = 0;
  for (let r = 0; r < want.length / V; r++) {
    let scale = 0, err = 0;
    for (let v = r * V; v < (r + 1) * V; v++) {
      scale = Math.max(scale, Math.abs(want[v]));
      err = Math.max(err, Math.abs(got[v] - want[v]));
    }
    worst = Math.max(worst, err / scale);
  }
  return worst;
}

/** A small model with large random weights (scores spread over about +-1: gates inside (0, 1)). */
export function smallModel(over: Partial<ModelConfig>): { c: ModelConfig; cpu: Gpt } {
  const c = checkConfig(tinyConfig({ vocabSize: 61, dim: 32, heads: 4, kvHeads: 2, ffnDim: 40, context: 64, scoreSlope: 0.2, ...over }));
  const cpu = Gpt.cpu(c);
  fillParams(cpu.params, 11, 0.5);
  return { c, cpu };
}

/** The CPU model's logits (T, V) for one sequence: the reference. */
export function cpuLogits(cpu: Gpt, ids: number[]): Float32Array {
  cpu.forward(ids, 1, ids.length);
  return cpu.logits.slice(0, ids.length * cpu.config.vocabSize);
}
