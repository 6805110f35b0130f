// The multi-query associative recall experiment of issue 7 (src/data/recall.ts), around the CLI:
//   node --import tsx scripts/recall.ts make --out data/recall --docs 3000 --pairs 240 --seed 1 [--key-length 3] [--gap 0 | --gap MIN:MAX] [--style text|compact]
//       writes a folder of documents to train on: `sparsek train --data data/recall --tokenizer byte ...`
//   --task copy --length 32 | --length MIN:MAX [--gap ...] [--repeats 1]: the long-range copy task instead (src/data/recall.ts, copyDocuments),
//       for make and eval alike
//   node --import tsx scripts/recall.ts eval --checkpoint runs/x --docs 20 --pairs 240 [--key-length 3] [--gap 0] [--near 512] [--device cuda]
//       scores fresh documents (a seed no `make` uses); last line JSON {nearAccuracy, farAccuracy, ...}:
//       value digits whose fact is at most --near characters back, and those further back (chance 0.1);
//       byDistance splits the same letters by distance to their fact: [0, 16], (16, 32], (32, 64], ... doubling
import { copyDocuments, recallDocuments, scoreRecall, scoreRecallByDistance } from '../src/data/recall.js';
import { loadModel } from '../src/model/load.js';
import { taskArgs, writeDocuments } from './task-cli.js';

const { command, flag } = taskArgs('scripts/recall.ts');

// --gap N, or --gap MIN:MAX for a gap drawn per document (likewise --length of the copy task)
const rangeFlag = (name: string, fallback: string): number | [number, number] => {
  const g = flag(name, fallback).split(':').map(Number);
  return g.length === 2 ? [g[0], g[1]] : g[0];
};
const gapFlag = () => rangeFlag('gap', '0');
const shape = () => ({ pairs: Number(flag('pairs', '240')), keyLength: Number(flag('key-length', '3')), gap: gapFlag(), style: flag('style', 'text') as 'text' | 'compact' });
// --task recall (default) or copy (--length letters, repeated after the gap)
const documents = (n: number, seed: number) => (flag('task', 'recall') === 'copy'
  ? copyDocuments(n, { length: rangeFlag('length', '32'), gap: gapFlag(), repeats: Number(flag('repeats', '1')), seed })
  : recallDocuments(n, { ...shape(), seed }));

if (command === 'make') {
  const out = flag('out');
  const docs = documents(Number(flag('docs', '3000')), Number(flag('seed', '1')));
  await writeDocuments(out, docs.map((d) => d.text));
} else if (command === 'eval') {
  const dir = flag('checkpoint');
  const n = Number(flag('docs', '20'));
  const near = Number(flag('near', '512'));
  const model = await loadModel(dir, { device: flag('device', 'cpu') as 'cpu' | 'cuda' });
  const docs = documents(n, 1_000_003);
  const sum = { nearCorrect: 0, nearTotal: 0, farCorrect: 0, farTotal: 0 };
  // bins of distance to the fact: [0, 16], (16, 32], (32, 64], ... up to the longest document
  const edges = [16];
  while (edges[edges.length - 1] < Math.max(...docs.map((d) => d.text.length))) edges.push(2 * edges[edges.length - 1]);
  const bins = { correct: edges.map(() => 0), total: edges.map(() => 0) };
  for (const doc of docs) {
    const ids = model.tokenizer.encode(doc.text);
    if (ids.length !== doc.text.length) throw new Error('scripts/recall.ts needs a byte-tokenizer model (one token per character)');
    const logits = await model.logits(ids);
    const r = scoreRecall(logits, model.config.vocabSize, ids, doc, near);
    for (const k of Object.keys(sum) as (keyof typeof sum)[]) sum[k] += r[k];
    const b = scoreRecallByDistance(logits, model.config.vocabSize, ids, doc, edges);
    edges.forEach((_, e) => { bins.correct[e] += b.correct[e]; bins.total[e] += b.total[e]; });
  }
  model.dispose();
  const byDistance = edges.map((to, e) => ({ from: e > 0 ? edges[e - 1] : 0, to, letters: bins.total[e],
    accuracy: bins.total[e] > 0 ? bins.correct[e] / bins.total[e] : null })).filter((b) => b.letters > 0);
  console.log(JSON.stringify({ checkpoint: dir, docs: n, near, nearAccuracy: sum.nearCorrect / Math.max(1, sum.nearTotal),
    farAccuracy: sum.farCorrect / Math.max(1, sum.farTotal), nearDigits: sum.nearTotal, farDigits: sum.farTotal, byDistance }));
} else {
  console.error('usage: scripts/recall.ts make|eval [--flags]  (see the header of scripts/recall.ts)');
  process.exit(2);
}
