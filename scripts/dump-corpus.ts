// Writes corpora as plain .txt files into one folder, one file per document, so several corpora
// can be trained on together (`--data FOLDER`), e.g. SOTU + Brown for the fine-tuning experiment.
//   node --import tsx scripts/dump-corpus.ts OUT sotu brown
import fs from 'node:fs';
import path from 'node:path';
import { loadCorpus } from '../src/data/corpus.js';

const [out, ...sources] = process.argv.slice(2);
if (!out || sources.length === 0) {
  console.error('usage: dump-corpus.ts OUT SOURCE...');
  process.exit(2);
}
for (const source of sources) {
  const dir = path.join(out, source.replace(/[^A-Za-z0-9_-]/g, '_'));
  fs.mkdirSync(dir, { recursive: true });
  const docs = await loadCorpus(source);
  for (const d of docs) fs.writeFileSync(path.join(dir, `${d.name.replace(/[^A-Za-z0-9_.-]/g, '_')}.txt`), d.text);
  console.log(`${source}: ${docs.length} documents -> ${dir}`);
}
