// The passkey experiment of issue 7, around the CLI:
//   node --import tsx scripts/passkey.ts make --out data/passkey --docs 3000 --length 3800 --seed 1
//       writes a folder of documents (one .txt each) to train on: `sparsek train --data data/passkey --tokenizer byte ...`
//   node --import tsx scripts/passkey.ts eval --checkpoint runs/x --docs 100 --length 3800 [--device cuda]
//       scores fresh documents (seed 1000 + the make seed's complement: never the training ones), keys in
//       the first half, so the key is at least ~length/2 characters back; last line JSON {digitAccuracy, exact, ...}
import { passkeyDocuments, passkeyProbe, scorePasskey } from '../src/data/passkey.js';
import { loadModel } from '../src/model/load.js';
import { taskArgs, writeDocuments } from './task-cli.js';

const { command, flag } = taskArgs('scripts/passkey.ts');

if (command === 'make') {
  const out = flag('out');
  const n = Number(flag('docs', '3000'));
  const docs = passkeyDocuments(n, { length: Number(flag('length', '3800')), depth: [0, 1], seed: Number(flag('seed', '1')) });
  await writeDocuments(out, docs.map((d) => d.text));
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
