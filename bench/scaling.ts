// Data-parallel scaling benchmark (issue 9, docs/distributed.md): training tokens/s of the
// GPT-2-small-shaped SparseK model (12 layers, width 768, 12 heads, K = W = 256) at T = 4096 on
// N GPUs, one process per GPU, gradients averaged with NCCL by the same code `train --gpus`
// runs (NcclSync). Weak scaling: each GPU keeps B rows, so the global batch is N * B.
//   tokens/s(N)  = N * B * T / (time of one step on the slowest rank)
//   efficiency   = tokens/s(N) / (N * tokens/s of one GPU without any all-reduce)
// Step = forward + backward + all-reduce of the gradients and loss + clip norm + AdamW, timed
// host-side between synchronizations, median of the timed steps after 2 warm-ups. The all-reduce
// alone is also timed (median of 5, gradients only), with its bus bandwidth as nccl-tests defines
// it for all-reduce: 2 (N - 1) / N * bytes / time.
//
//   node --import tsx bench/scaling.ts [--gpus 1,2,4,8] [--T 4096] [--B 1] [--steps 5] [--precision bf16|fp32]
//
// Run it on the GPU machine through .device/run.sh (which sets NCCL_NVLS_ENABLE=0). The parent
// process touches no GPU; it forks one worker per rank (this file again, with SPARSEK_BENCH_RANK set).

import { execSync, fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Precision } from '../src/backend.js';
import { ModelConfig, PRESETS } from '../src/model/config.js';
import { optimizerStep } from './step.js';

interface Job { world: number; T: number; B: number; steps: number; precision: Precision; baseline: boolean }
type ToRank = { type: 'job'; job: Job } | { type: 'id'; id: Uint8Array };
interface RankResult { rank: number; device: string; nccl: string; params: number; msStep: number; msStepNoSync: number | null; msAllReduce: number }
type FromRank = { type: 'id'; id: Uint8Array } | { type: 'result'; result: RankResult } | { type: 'error'; message: string };

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** One rank: the model, the timed steps, then the all-reduce alone. */
async function rank(r: number, job: Job, next: () => Promise<Uint8Array>): Promise<RankResult> {
  const { selectCudaDevice, cudaRuntime } = await import('../src/cuda/runtime.js');
  const { CudaBackend } = await import('../src/cuda/backend.js');
  const { loadNccl, ncclUniqueId, NcclComm } = await import('../src/cuda/nccl.js');
  const { NcclSync } = await import('../src/train/distributed-worker.js');
  const { Gpt } = await import('../src/model/gpt.js');
  const { allocParams, allocParamsOn, initParams } = await import('../src/model/params.js');
  const { Rng } = await import('../src/core/random.js');
  selectCudaDevice(r);
  const rt = cudaRuntime();
  const lib = loadNccl();
  let id: Uint8Array;
  if (r === 0) {
    id = ncclUniqueId(lib);
    process.send!({ type: 'id', id } satisfies FromRank);
  } else {
    id = await next();
  }
  const comm = NcclComm.init(id, job.world, r, lib);
  const sync = new NcclSync(comm);
  const be = new CudaBackend(rt, { precision: job.precision });
  const c: ModelConfig = { ...PRESETS.gpt2small, attention: 'sparsek', context: job.T, scoreSlope: 0.01 };
  const host = allocParams(c);
  initParams(host, c, 1);
  const model = new Gpt(c, be);
  be.upload(model.params.flat, host.flat);
  const m = allocParamsOn(c, be);
  const v = allocParamsOn(c, be);
  const rng = new Rng(1 + r); // each rank its own rows, as in training
  const ids = Array.from({ length: job.B * job.T }, () => rng.int(c.vocabSize));
  let adamStep = 0;
  const timeSteps = async (withSync: boolean): Promise<number> => {
    const times: number[] = [];
    for (let s = 0; s < job.steps + 2; s++) {
      be.synchronize();
      const t0 = performance.now();
      let loss = model.forward(ids, job.B, job.T, ids);
      model.zeroGrad();
      model.backward();
      if (withSync) loss = await sync.reduce(be, model.grads.flat, loss);
      optimizerStep(be, model, m, v, ++adamStep);
      be.synchronize();
      if (s >= 2) times.push(performance.now() - t0);
      if (!Number.isFinite(loss)) throw new Error(`loss ${loss} at step ${s}`);
    }
    return median(times);
  };
  const msStep = await timeSteps(true);
  const msStepNoSync = job.baseline ? await timeSteps(false) : null;
  const ar: number[] = [];
  for (let s = 0; s < 5; s++) {
    be.synchronize();
    const t0 = performance.now();
    comm.allReduceMean(model.grads.flat.ptr, model.grads.flat.length, rt.stream);
    be.synchronize();
    ar.push(performance.now() - t0);
  }
  comm.destroy();
  return { rank: r, device: rt.name, nccl: lib.version, params: host.flat.length, msStep, msStepNoSync, msAllReduce: median(ar) };
}

/** Runs one configuration with `world` worker processes; resolves with every rank's result. */
function launch(job: Job): Promise<RankResult[]> {
  const self = fileURLToPath(import.meta.url);
  return new Promise((resolve, reject) => {
    const kids: ChildProcess[] = [];
    const results: RankResult[] = [];
    let failed = false;
    let exited = 0;
    for (let r = 0; r < job.world; r++) {
      const kid = fork(self, [], {
        env: { ...process.env, SPARSEK_BENCH_RANK: String(r) },
        execArgv: process.execArgv.filter((a) => !a.startsWith('--inspect')),
        serialization: 'advanced',
      });
      kids.push(kid);
      kid.on('message', (raw) => {
        const msg = raw as FromRank;
        if (msg.type === 'id') for (const k of kids.slice(1)) k.send({ type: 'id', id: msg.id } satisfies ToRank);
        else if (msg.type === 'result') results.push(msg.result);
        else if (!failed) {
          failed = true;
          for (const k of kids) k.kill('SIGKILL');
          reject(new Error(`rank ${r}: ${msg.message}`));
        }
      });
      kid.on('exit', (code) => {
        exited++;
        if (code !== 0 && !failed) {
          failed = true;
          for (const k of kids) k.kill('SIGKILL');
          reject(new Error(`rank ${r} exited with code ${code}`));
        }
        if (exited === job.world && !failed) resolve(results.sort((a, b) => a.rank - b.rank));
      });
      kid.send({ type: 'job', job } satisfies ToRank);
    }
  });
}

if (process.env.SPARSEK_BENCH_RANK !== undefined) {
  // A worker: one job, rank 0's id for the others, one result.
  const r = Number(process.env.SPARSEK_BENCH_RANK);
  let idWaiter: ((id: Uint8Array) => void) | null = null;
  let early: Uint8Array | null = null;
  process.on('message', (raw) => {
    const msg = raw as ToRank;
    if (msg.type === 'job') {
      const next = () => (early !== null ? Promise.resolve(early) : new Promise<Uint8Array>((res) => { idWaiter = res; }));
      rank(r, msg.job, next).then(
        (result) => process.send!({ type: 'result', result } satisfies FromRank, () => process.exit(0)),
        (err: Error) => process.send!({ type: 'error', message: err.stack ?? err.message } satisfies FromRank, () => process.exit(1)),
      );
    } else if (idWaiter !== null) {
      idWaiter(new Uint8Array(msg.id));
    } else {
      early = new Uint8Array(msg.id);
    }
  });
} else {
  const args = process.argv.slice(2);
  const flag = (name: string, fallback: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : fallback;
  };
  const visible = (() => {
    try {
      return execSync('nvidia-smi -L', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n').filter((l) => l.startsWith('GPU ')).length;
    } catch {
      return 1;
    }
  })();
  const worlds = flag('gpus', [1, 2, 4, 8].filter((n) => n <= visible).join(',')).split(',').map(Number);
  const T = Number(flag('T', '4096'));
  const B = Number(flag('B', '1'));
  const steps = Number(flag('steps', '5'));
  const precision = flag('precision', 'bf16') as Precision;
  const commit = process.env.SPARSEK_COMMIT ?? (() => {
    try {
      return execSync('git rev-parse --short HEAD', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return 'unknown';
    }
  })();
  console.log(`# data-parallel scaling: GPT-2-small-shaped sparsek (K = W = 256), T = ${T}, B = ${B} per GPU, ${precision}, ` +
    `commit ${commit}, ${new Date().toISOString().slice(0, 10)}, NCCL_NVLS_ENABLE=${process.env.NCCL_NVLS_ENABLE ?? '(unset)'}`);
  let single: number | null = null; // tokens/s of one GPU without all-reduce
  const rows: string[] = [];
  for (const world of worlds) {
    const res = await launch({ world, T, B, steps, precision, baseline: world === 1 });
    const slowest = Math.max(...res.map((x) => x.msStep));
    const tps = (world * B * T) / (slowest / 1000);
    if (world === 1 && res[0].msStepNoSync !== null) single = (B * T) / (res[0].msStepNoSync / 1000);
    const bytes = res[0].params * 4;
    const ar = Math.max(...res.map((x) => x.msAllReduce));
    const busGBs = world > 1 ? ((2 * (world - 1)) / world) * bytes / (ar / 1000) / 1e9 : null;
    const eff = single !== null ? tps / (world * single) : null;
    console.log(JSON.stringify({
      gpus: world, device: res[0].device, nccl: res[0].nccl, T, B_per_gpu: B, precision, params: res[0].params,
      ms_per_step: Number(slowest.toFixed(2)), tokens_per_s: Math.round(tps),
      single_gpu_no_allreduce_tokens_per_s: single === null ? null : Math.round(single),
      efficiency: eff === null ? null : Number(eff.toFixed(3)),
      allreduce_ms: Number(ar.toFixed(2)), allreduce_bus_GB_s: busGBs === null ? null : Number(busGBs.toFixed(1)),
    }));
    rows.push(`| ${world} | ${slowest.toFixed(1)} | ${Math.round(tps)} | ${eff === null ? '-' : (eff * 100).toFixed(1) + '%'} | ${ar.toFixed(2)} | ${busGBs === null ? '-' : busGBs.toFixed(0)} |`);
  }
  console.log(`\n| GPUs | ms/step (slowest rank) | tokens/s | efficiency | all-reduce ms | bus GB/s |\n|--:|--:|--:|--:|--:|--:|\n${rows.join('\n')}`);
}
