// End to end: the browser demo (web/) built with Vite, served with a small checkpoint, driven by
// headless Debian chromium on SwiftShader's WebGPU through playwright-core. The test writes a
// sparsek run folder (random weights, byte tokenizer), opens the page with ?model=, clicks
// Generate and checks:
// - the text: greedy decoding in the page gives the same tokens as the CPU's cached decoder
//   (src/model/generate.ts), the verified reference, and the page shows prompt + their text;
// - the memory readout: the K/V cache bytes after each token stop changing once the context
//   passes W + K (plus the selector's settling), and the readout shows them;
// and saves a screenshot to test-results/e2e/webgpu-demo.png. Skipped visibly without chromium.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { saveRun } from '../../src/io/checkpoint.js';
import { checkConfig } from '../../src/model/config.js';
import { Gpt } from '../../src/model/gpt.js';
import { generate } from '../../src/model/generate.js';
import { DEFAULT_TRAIN } from '../../src/train/train.js';
import { ByteTokenizer } from '../../src/tokenizer/index.js';
import { fillParams } from '../model/fixtures.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SCREENSHOT = path.join(ROOT, 'test-results', 'e2e', 'webgpu-demo.png');
const skip = fs.existsSync(CHROMIUM) ? false : `no chromium at ${CHROMIUM} (Debian: apt-get install chromium; or set CHROMIUM_PATH)`;

const PROMPT = 'the state of the union';
const TOKENS = 48;

/** A small sparsek run folder whose greedy continuation is lowercase letters and spaces. */
async function writeRun(dir: string): Promise<{ ids: number[]; params: Gpt['params']; config: ReturnType<typeof checkConfig> }> {
  const config = checkConfig({
    vocabSize: 256, layers: 2, dim: 64, heads: 4, kvHeads: 2, ffnDim: 96, context: 256,
    attention: 'sparsek', k: 6, window: 5, scoreSlope: 0.2, hashBuckets: 8, ropeTheta: 10000, normEps: 1e-5,
  });
  const model = Gpt.cpu(config);
  fillParams(model.params, 3, 0.6);
  // Shrink the tied embedding rows of every byte but a-z and space: the output head then prefers
  // those, and the page's text stays printable.
  const C = config.dim;
  for (let v = 0; v < 256; v++) {
    const keep = v === 32 || (v >= 97 && v <= 122);
    if (!keep) for (let c = 0; c < C; c++) model.params.wte[v * C + c] *= 0.05;
  }
  await saveRun(dir, { model: config, train: DEFAULT_TRAIN, params: model.params, m: null, v: null, step: 0, rng: [1, 2, 3, 4], elapsedSeconds: 0, tokenizer: new ByteTokenizer() }, []);
  return { ids: new ByteTokenizer().encode(PROMPT), params: model.params, config };
}

/** Serves `dist` at / and the run folder at /ckpt/. */
function serve(dist: string, ckpt: string): Promise<http.Server> {
  const types: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.json': 'application/json', '.css': 'text/css' };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const [base, rel] = url.pathname.startsWith('/ckpt/') ? [ckpt, url.pathname.slice(6)] : [dist, url.pathname === '/' ? 'index.html' : url.pathname.slice(1)];
    const file = path.join(base, path.normalize(rel));
    if (!file.startsWith(base) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

test('browser demo: loads a checkpoint, generates the CPU decoder\'s tokens, cache memory flat', { skip, timeout: 120_000 }, async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sparsek-e2e-'));
  const ckpt = path.join(tmp, 'run');
  const dist = path.join(tmp, 'dist');
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const { ids, params, config } = await writeRun(ckpt);

  const { build } = await import('vite');
  await build({ configFile: path.join(ROOT, 'web', 'vite.config.ts'), build: { outDir: dist, emptyOutDir: true }, logLevel: 'error' });
  const server = await serve(dist, ckpt);
  t.after(() => server.close());
  const port = (server.address() as { port: number }).port;

  const { chromium } = await import('playwright-core');
  // WebGPU in headless chromium on SwiftShader (Vulkan on the CPU); root in CI needs --no-sandbox.
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'] });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`http://127.0.0.1:${port}/?model=/ckpt`);
  const status = page.getByTestId('status');
  try {
    await page.waitForFunction(() => !(document.getElementById('generate') as HTMLButtonElement).disabled || document.getElementById('status')!.classList.contains('error'), null, { timeout: 30_000 });
  } catch (e) {
    assert.fail(`the page did not load the model: status "${await status.textContent()}", errors ${errors.join('; ')}`);
  }
  if (await status.evaluate((el) => el.classList.contains('error'))) {
    const text = await status.textContent();
    if (/navigator\.gpu|adapter/i.test(text ?? '')) {
      t.skip(`chromium has no WebGPU adapter here: ${text}`);
      return;
    }
    assert.fail(`the page reports an error: ${text}`);
  }

  await page.fill('#prompt', PROMPT);
  await page.fill('#tokens', String(TOKENS));
  await page.fill('#temperature', '0');
  await page.click('#generate');
  await page.waitForFunction(() => /^Done/.test(document.getElementById('status')!.textContent ?? ''), null, { timeout: 60_000 });
  fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  // The text: the CPU's greedy continuation, token for token.
  const want = generate(config, params, ids, { tokens: TOKENS, temperature: 0, topP: 1, seed: 1 });
  const got = JSON.parse((await page.getByTestId('output').getAttribute('data-ids')) ?? '[]') as number[];
  assert.deepEqual(got, want.ids, 'generated ids');
  const text = new ByteTokenizer().decode(want.ids);
  assert.match(text, /^[a-z ]+$/, 'the fixture model writes letters and spaces');
  assert.equal(await page.getByTestId('output').textContent(), PROMPT + text);

  // The memory: flat once the context passes W + K and the selector's scalar lists settle.
  const history = JSON.parse((await page.getByTestId('kv-bytes').getAttribute('data-history')) ?? '[]') as number[];
  assert.equal(history.length, ids.length + TOKENS);
  const last = history[history.length - 1];
  for (let i = 40; i < history.length; i++) assert.equal(history[i], last, `cache bytes changed at position ${i}: ${history.slice(0, i + 1)}`);
  const HS = config.dim / config.heads;
  assert.ok(last >= config.layers * config.kvHeads * (config.k + config.window) * 2 * HS * 4, `cache ${last} bytes below the K/V floor`);
  assert.equal(await page.getByTestId('kv-bytes').textContent(), `${(last / 1024).toFixed(1)} KiB`);
  assert.ok(Number(await page.getByTestId('tokens-per-second').textContent()) > 0, 'tokens/s shown');
  assert.deepEqual(errors, [], 'page errors');
});
