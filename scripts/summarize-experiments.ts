// Turns the JSON lines of scripts/experiments.sh (runs/exp/results.jsonl) into the markdown tables of
// docs/RESULTS.md, so a rerun updates the numbers mechanically:
//   node --import tsx scripts/summarize-experiments.ts [runs/exp/results.jsonl]
// lm: validation perplexity per evaluation context; slope: perplexity; passkey: digit accuracy and
// exact keys; recall, gap, copy, curriculum: accuracy for near and far facts. A run evaluated twice in
// one call keeps its last line; lines with different "call" labels are repeats, shown side by side.
import fs from 'node:fs';

const file = process.argv[2] ?? 'runs/exp/results.jsonl';
if (!fs.existsSync(file)) {
  console.error(`no results at ${file} (run scripts/experiments.sh first)`);
  process.exit(2);
}
type Row = { part: string; run: string; call?: string; result: Record<string, number | string> };
const rows: Row[] = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Row);
const parts = [...new Set(rows.map((r) => r.part))];
const fmt = (x: unknown, digits = 1) => (typeof x === 'number' ? x.toFixed(digits) : '');
/** Within one call (a line's optional "call" label), the last line wins; lines of different calls are repeats. */
const lastPerCall = (rs: Row[]): Row[] => [...new Map(rs.map((r) => [r.call ?? '', r])).values()];

for (const part of parts) {
  const mine = rows.filter((r) => r.part === part);
  const runs = [...new Set(mine.map((r) => r.run))];
  console.log(`\n### ${part}\n`);
  if (part === 'lm' || part === 'slope') {
    // repeats of a run (other calls) side by side: 74.5 · 67.0
    const contexts = [...new Set(mine.map((r) => Number(r.result.context)))].sort((a, b) => a - b);
    console.log(`| run | ${contexts.map((T) => `T = ${T}`).join(' | ')} |`);
    console.log(`|---|${contexts.map(() => '--:').join('|')}|`);
    for (const run of runs) {
      const at = (T: number) => lastPerCall(mine.filter((r) => r.run === run && Number(r.result.context) === T)).map((r) => fmt(r.result.perplexity)).join(' · ');
      console.log(`| ${run} | ${contexts.map(at).join(' | ')} |`);
    }
  } else if (part === 'passkey') {
    console.log('| run | digit accuracy | keys exact |\n|---|--:|--:|');
    for (const run of runs) {
      for (const { result: r } of lastPerCall(mine.filter((x) => x.run === run && 'digitAccuracy' in x.result))) {
        console.log(`| ${run} | ${fmt(r.digitAccuracy, 3)} | ${fmt(r.exact, 2)} |`);
      }
    }
  } else {
    // recall, gap, copy, curriculum: accuracy split by distance, one row per run and call
    console.log('| run | call | facts within reach | facts further back |\n|---|---|--:|--:|');
    for (const run of runs) {
      for (const x of lastPerCall(mine.filter((x) => x.run === run && 'farAccuracy' in x.result))) {
        const near = x.result.nearDigits === 0 ? 'none' : fmt(x.result.nearAccuracy, 3); // no fact within reach
        console.log(`| ${run} | ${x.call ?? ''} | ${near} | ${fmt(x.result.farAccuracy, 3)} |`);
      }
    }
  }
}
