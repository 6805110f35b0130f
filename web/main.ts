// The browser demo: load a sparsek run folder (file picker or URL), then generate text token by
// token on WebGPU with the constant-memory decoder, showing tokens as they arrive, tokens/s and
// the K/V cache bytes (plotted against the context length next to what a dense cache would hold).
// State for tests: #kv carries data-history, the cache bytes after each token, and #output
// data-ids, the generated token ids, as JSON.
/// <reference types="@webgpu/types" />

import { browserRuntime } from '../src/webgpu/device.js';
import { WebGpuModel } from '../src/webgpu/model.js';
import { WebGpuDecoder } from '../src/webgpu/decode.js';
import { LoadedRun, RunFiles, runFromFiles } from '../src/webgpu/files.js';
import type { GpuRuntime } from '../src/webgpu/runtime.js';
import { sampleLogits } from '../src/model/generate.js';
import { headSize } from '../src/model/config.js';
import { Rng } from '../src/core/random.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = $('status');
const generateBtn = $<HTMLButtonElement>('generate');
const stopBtn = $<HTMLButtonElement>('stop');

let rt: GpuRuntime | null = null;
let run: LoadedRun | null = null;
let model: WebGpuModel | null = null;
let stopRequested = false;

function say(text: string, error = false): void {
  status.textContent = text;
  status.classList.toggle('error', error);
}

function kib(bytes: number): string {
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(2)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`;
}

async function loadFiles(files: RunFiles, from: string): Promise<void> {
  generateBtn.disabled = true;
  say(`Reading ${from}…`);
  rt ??= await browserRuntime();
  const next = runFromFiles(files);
  model?.dispose();
  model = null;
  model = await WebGpuModel.create(rt, next.config, next.params);
  run = next;
  const c = next.config;
  $('model-info').textContent = `${c.attention} model: ${c.layers} layers, width ${c.dim}, ${c.heads} heads (${c.kvHeads} KV), ` +
    `K ${c.k}, W ${c.window}, vocabulary ${c.vocabSize}; adapter: ${rt.adapterName}`;
  generateBtn.disabled = false;
  say(`Loaded ${from}.`);
}

async function fromPicker(list: FileList): Promise<void> {
  const byName = new Map([...list].map((f) => [f.name, f]));
  const weights = byName.get('model.safetensors') ?? [...list].find((f) => f.name.endsWith('.safetensors'));
  const config = byName.get('config.json');
  const tokenizer = byName.get('tokenizer.json');
  if (!config || !weights || !tokenizer) throw new Error('pick the three files of a run folder: config.json, model.safetensors, tokenizer.json');
  await loadFiles({ config: await config.text(), weights: await weights.arrayBuffer(), tokenizer: await tokenizer.text() }, 'the picked files');
}

async function fromUrl(base: string): Promise<void> {
  const url = base.replace(/\/+$/, '');
  const get = async (name: string) => {
    const r = await fetch(`${url}/${name}`);
    if (!r.ok) throw new Error(`${url}/${name}: HTTP ${r.status}`);
    return r;
  };
  const [config, weights, tokenizer] = await Promise.all([get('config.json'), get('model.safetensors'), get('tokenizer.json')]);
  await loadFiles({ config: await config.text(), weights: await weights.arrayBuffer(), tokenizer: await tokenizer.text() }, url);
}

/** Cache bytes after each token (the decoder's), and a dense cache's for comparison. */
function plot(history: number[], denseAt: (n: number) => number): void {
  const cv = $<HTMLCanvasElement>('plot');
  const g = cv.getContext('2d');
  if (!g || history.length === 0) return;
  const n = history.length;
  const top = Math.max(...history, denseAt(n)) * 1.1;
  const x = (i: number) => 40 + ((cv.width - 50) * i) / Math.max(1, n - 1);
  const y = (b: number) => cv.height - 20 - ((cv.height - 30) * b) / top;
  g.clearRect(0, 0, cv.width, cv.height);
  g.font = '12px system-ui';
  g.fillStyle = '#666';
  g.fillText(`${kib(top)}`, 2, 14);
  g.fillText('context length →', cv.width - 110, cv.height - 4);
  const line = (color: string, f: (i: number) => number, label: string) => {
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    for (let i = 0; i < n; i++) (i === 0 ? g.moveTo : g.lineTo).call(g, x(i), y(f(i)));
    g.stroke();
    g.fillStyle = color;
    g.fillText(label, x(n - 1) - 160, y(f(n - 1)) - 6);
  };
  line('#bbb', (i) => denseAt(i + 1), 'dense K/V cache');
  line('#0b5cad', (i) => history[i], 'SparseK cache (this page)');
}

async function generate(): Promise<void> {
  if (!model || !run) return;
  const { config: c, tokenizer } = run;
  const prompt = ($<HTMLTextAreaElement>('prompt').value || ' ');
  const n = Math.max(1, Number($<HTMLInputElement>('tokens').value) | 0);
  const temperature = Math.max(0, Number($<HTMLInputElement>('temperature').value));
  const rng = new Rng(Number($<HTMLInputElement>('seed').value) | 0);
  generateBtn.disabled = true;
  stopBtn.disabled = false;
  stopRequested = false;
  const out = $('output');
  out.textContent = prompt;
  const gen = document.createElement('span');
  gen.className = 'gen';
  out.appendChild(gen);
  const kv = $('kv');
  const history: number[] = [];
  const dec = new WebGpuDecoder(model);
  const HS = headSize(c);
  const denseAt = (len: number) => c.layers * c.kvHeads * len * 2 * HS * 4;
  try {
    const ids = tokenizer.encode(prompt);
    if (ids.length === 0) ids.push(0);
    say(`Reading the prompt (${ids.length} tokens)…`);
    let logits: Float32Array = new Float32Array(0);
    for (const id of ids) {
      logits = await dec.step(id);
      history.push(dec.stats().bytes);
    }
    say('Generating…');
    const newIds: number[] = [];
    const t0 = performance.now();
    for (let i = 0; i < n && !stopRequested; i++) {
      const id = sampleLogits(logits, temperature, 1, rng);
      newIds.push(id);
      gen.textContent = tokenizer.decode(newIds);
      out.dataset.ids = JSON.stringify(newIds);
      if (i + 1 < n) logits = await dec.step(id);
      const s = dec.stats();
      history.push(s.bytes);
      const secs = (performance.now() - t0) / 1000;
      $('tps').textContent = (newIds.length / Math.max(secs, 1e-6)).toFixed(1);
      kv.textContent = kib(s.bytes);
      kv.dataset.history = JSON.stringify(history);
      $('dense').textContent = kib(denseAt(dec.length));
      $('ctx').textContent = String(dec.length);
      if (i % 8 === 0 || i + 1 === n) plot(history, denseAt);
    }
    plot(history, denseAt);
    say(`Done: ${newIds.length} tokens${stopRequested ? ' (stopped)' : ''}. The cache held ${kib(history[history.length - 1])} at ${dec.length} tokens of context.`);
  } finally {
    dec.dispose();
    generateBtn.disabled = false;
    stopBtn.disabled = true;
  }
}

function guard(f: () => Promise<void>): () => void {
  return () => {
    f().catch((e: unknown) => {
      console.error(e);
      say(e instanceof Error ? `${e.name}: ${e.message}` : String(e), true);
      generateBtn.disabled = !model;
      stopBtn.disabled = true;
    });
  };
}

$<HTMLInputElement>('files').addEventListener('change', (ev) => {
  const list = (ev.target as HTMLInputElement).files;
  if (list && list.length > 0) guard(() => fromPicker(list))();
});
$('load-url').addEventListener('click', guard(() => fromUrl($<HTMLInputElement>('url').value)));
generateBtn.addEventListener('click', guard(generate));
stopBtn.addEventListener('click', () => { stopRequested = true; });

// ?model=URL loads a folder on start (the end-to-end test uses this).
guard(async () => {
  rt = await browserRuntime();
  say(`WebGPU ready (${rt.adapterName}). Load a checkpoint.`);
  const url = new URLSearchParams(location.search).get('model');
  if (url) {
    $<HTMLInputElement>('url').value = url;
    await fromUrl(url);
  }
})();
