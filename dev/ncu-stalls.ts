// Where a kernel's warps wait, from Nsight Compute's stall samples per SASS instruction: reads the CSV of
// `ncu -i REPORT --page source --print-source sass --csv` (one kernel, REPORT made with
// `--section SourceCounters`), and prints the stall reasons' shares over the whole kernel, then runs of
// --window instructions that hold at least --min of the samples, each with its share, its three largest
// reasons and its commonest opcodes. Session 12 found the block prologues and the window backward's
// bulk-reduction wait this way (bench/RESULTS.md).
//   node --import tsx dev/ncu-stalls.ts FILE.csv [--window 100] [--min 0.01] [--top 0]
// --top N also lists the N instructions with the most samples.
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : fallback);
const file = args.find((a, i) => !a.startsWith('--') && (i === 0 || !args[i - 1].startsWith('--')));
if (!file) {
  console.error('usage: node --import tsx dev/ncu-stalls.ts FILE.csv [--window 100] [--min 0.01] [--top 0]');
  process.exit(2);
}
const window = Number(flag('window', '100')), min = Number(flag('min', '0.01')), top = Number(flag('top', '0'));

/** One CSV line's fields: comma-separated, each in double quotes ("" inside a field is a quote). */
function fields(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"]|"")*)"|([^,]*)/g;
  for (let m = re.exec(line); m !== null && m.index <= line.length; m = re.exec(line)) {
    out.push(m[1] !== undefined ? m[1].replace(/""/g, '"') : m[2]);
    if (re.lastIndex >= line.length) break;
    re.lastIndex++; // past the comma
  }
  return out;
}

const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
const headerAt = lines.findIndex((l) => l.startsWith('"Address"'));
if (headerAt < 0) throw new Error(`${file}: no "Address" header line; is this ncu's --page source --csv output?`);
const header = fields(lines[headerAt]);
const col = (name: string): number => {
  const i = header.indexOf(name);
  if (i < 0) throw new Error(`${file}: no column "${name}" (collect with --section SourceCounters)`);
  return i;
};
const samplesCol = col('Warp Stall Sampling (All Samples)'), sourceCol = col('Source');
// the per-reason columns of all samples (not the "(Not Issued)" ones)
const reasons = header.map((h, i) => ({ h, i })).filter(({ h }) => h.startsWith('stall_') && !h.includes('(Not Issued)'));
const rows = lines.slice(headerAt + 1).map(fields).map((f) => ({
  sass: (f[sourceCol] ?? '').trim(),
  samples: Number(f[samplesCol]) || 0,
  by: reasons.map(({ i }) => Number(f[i]) || 0),
}));
const total = rows.reduce((a, r) => a + r.samples, 0);
if (total === 0) throw new Error(`${file}: no stall samples`);
const pct = (x: number, of = total) => `${((100 * x) / of).toFixed(1)}%`;
const opcode = (sass: string) => sass.replace(/^@!?U?P\w+\s+/, '').split(/[\s.]/)[0];
const topReasons = (by: number[], of: number, n: number) =>
  by.map((v, k) => ({ v, k })).sort((a, b) => b.v - a.v).slice(0, n).map(({ v, k }) => `${reasons[k].h.slice(6)} ${pct(v, of)}`).join(', ');

const sums = reasons.map((_, k) => rows.reduce((a, r) => a + r.by[k], 0));
console.log(`${file}: ${rows.length} instructions, ${total} samples; ${topReasons(sums, total, 8)}`);
for (let a = 0; a < rows.length; a += window) {
  const run = rows.slice(a, a + window);
  const s = run.reduce((x, r) => x + r.samples, 0);
  if (s / total < min) continue;
  const by = reasons.map((_, k) => run.reduce((x, r) => x + r.by[k], 0));
  const ops = new Map<string, number>();
  for (const r of run) ops.set(opcode(r.sass), (ops.get(opcode(r.sass)) ?? 0) + 1);
  const common = [...ops].sort((x, y) => y[1] - x[1]).slice(0, 6).map(([o, c]) => `${o} ${c}`).join(' ');
  console.log(`${String(a).padStart(5)}-${String(a + run.length - 1).padStart(5)} ${pct(s).padStart(6)}  ${topReasons(by, s, 3)}  | ${common}`);
}
if (top > 0) {
  console.log(`the ${top} instructions with the most samples:`);
  const order = rows.map((r, i) => ({ r, i })).sort((x, y) => y.r.samples - x.r.samples).slice(0, top).sort((x, y) => x.i - y.i);
  for (const { r, i } of order) console.log(`${String(i).padStart(5)} ${pct(r.samples).padStart(6)}  ${r.sass.slice(0, 70).padEnd(70)} ${topReasons(r.by, r.samples || 1, 2)}`);
}
