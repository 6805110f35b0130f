// Turns the JSON lines of scripts/experiments.sh (runs/exp/results.jsonl) into the markdown tables of
// docs/RESULTS.md, so a rerun updates the numbers mechanically:
//   node --import tsx scripts/summarize-experiments.ts [runs/exp/results.jsonl]
// lm: validation perplexity per evaluation context; slope: perplexity; passkey: digit accuracy and
// exact keys; recall: accuracy for near and far facts. A run evaluated twice keeps its last line.
import fs from 'node:fs';

const file = process.argv[2] ?? 'runs/exp/results.jsonl';
if (!fs.existsSync(file)) {
  console.error(`no results at ${file} (run scripts/experiments.sh first)`);
  process.exit(2);
}
type Row = { part: string; run: string; result: Record<string, number | string> };
const rows: Row[] = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Row);
const parts = [...new Set(rows.map((r) => r.part))];
const fmt = (x: unknown, digits = 1) => (typeof x === 'number' ? x.toFixed(digits) : '');

for (const part of parts) {
  const mine = rows.filter((r) => r.part === part);
  const runs = [...new Set(mine.map((r) => r.run))];
  console.log(`\n### ${part}\n`);
  if (part === 'lm' || part === 'slope') {
    const contexts = [...new Set(mine.map((r) => Number(r.result.context)))].sort((a, b) => a - b);
    console.log(`| run | ${contexts.map((T) => `T = ${T}`).join(' | ')} |`);
    console.log(`|---|${contexts.map(() => '--:').join('|')}|`);
    for (const run of runs) {
      const at = (T: number) => mine.filter((r) => r.run === run && Number(r.result.context) === T).at(-1)?.result.perplexity;
      console.log(`| ${run} | ${contexts.map((T) => fmt(at(T))).join(' | ')} |`);
    }
  } else if (part === 'passkey') {
    console.log('| run | digit accuracy | keys exact |\n|---|--:|--:|');
    for (const run of runs) {
      const r = mine.filter((x) => x.run === run && 'digitAccuracy' in x.result).at(-1)?.result;
      if (r) console.log(`| ${run} | ${fmt(r.digitAccuracy, 3)} | ${fmt(r.exact, 2)} |`);
    }
  } else if (part === 'recall') {
    console.log('| run | facts within reach | facts further back |\n|---|--:|--:|');
    for (const run of runs) {
      const r = mine.filter((x) => x.run === run && 'farAccuracy' in x.result).at(-1)?.result;
      if (r) console.log(`| ${run} | ${fmt(r.nearAccuracy, 3)} | ${fmt(r.farAccuracy, 3)} |`);
    }
  }
}
