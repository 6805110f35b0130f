// The passkey experiment of issue 7, around the CLI:
//   node --import tsx scripts/passkey.ts make --out data/passkey --docs 3000 --length 3800 --seed 1
//       writes a folder of documents (one .txt each) to train on: `sparsek train --data data/passkey --tokenizer byte ...`
//   node --import tsx scripts/passkey.ts eval --checkpoint runs/x --docs 100 --length 3800 [--device cuda]
//       scores fresh documents (seed 1000 + the make seed's complement: never the training ones), keys in
//       the first half, so the key is at least ~length/2 characters back; last line JSON {digitAccuracy, exact, ...}
import fs from 'node:fs';
import path from 'node:path';
import { passkeyDocuments, passkeyProbe, scorePasskey } from '../src/data/passkey.js';
import { loadModel } from '../src/model/load.js';
import { writeFileAtomic } from '../src/io/atomic.js';

const [command, ...rest] = process.argv.slice(2);
const flag = (name: string, fallback?: string): string => {
  const i = rest.indexOf(`--${name}`);
  if (i >= 0) return rest[i + 1];
  if (fallback === undefined) throw new Error(`scripts/passkey.ts ${command}: --${name} is required`);
  return fallback;
};

if (command === 'make') {
  const out = flag('out');
  const n = Number(flag('docs', '3000'));
  const docs = passkeyDocuments(n, { length: Number(flag('length', '3800')), depth: [0, 1], seed: Number(flag('seed', '1')) });
  fs.mkdirSync(out, { recursive: true });
  for (let d = 0; d < docs.length; d++) await writeFileAtomic(path.join(out, `${String(d).padStart(5, '0')}.txt`), docs[d].text);
  console.log(JSON.stringify({ out, docs: docs.length, chars: docs.reduce((a, d) => a + d.text.length, 0) }));
} else if (command === 'eval') {
  const dir = flag('checkpoint');
  const n = Number(flag('docs', '100'));
  const length = Number(flag('length', '3800'));
  const model = await loadModel(dir, { device: flag('device', 'cpu') as 'cpu' | 'cuda' });
  const V = model.config.vocabSize;
  // Evaluation documents: a seed no training corpus of `make` uses (make's seeds are small integers).
  const docs = passkeyDocuments(n, { length, depth: [0, 0.5], seed: 1_000_003 });
  let digits = 0, exact = 0, distance = 0;
  for (const doc of docs) {
    const probe = passkeyProbe(doc, (s) => model.tokenizer.encode(s));
    const r = scorePasskey(await model.logits(probe.ids), V, probe);
    digits += r.correct;
    exact += r.exact ? 1 : 0;
    distance += doc.text.length - doc.keyAt;
  }
  model.dispose();
  console.log(JSON.stringify({ checkpoint: dir, docs: n, length, digitAccuracy: digits / (5 * n), exact: exact / n, meanKeyDistance: Math.round(distance / n) }));
} else {
  console.error('usage: scripts/passkey.ts make|eval [--flags]  (see the header of scripts/passkey.ts)');
  process.exit(2);
}
