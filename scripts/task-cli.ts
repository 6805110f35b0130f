// What scripts/passkey.ts and scripts/recall.ts share: reading `COMMAND --flag value ...`, and
// writing a task's documents as a folder corpus (one .txt each, written atomically) that
// `sparsek train --data DIR --tokenizer byte` reads.
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../src/io/atomic.js';

/** The command and a flag reader for `script COMMAND --name value ...`; a flag without a fallback is required. */
export function taskArgs(script: string): { command: string | undefined; flag: (name: string, fallback?: string) => string } {
  const [command, ...rest] = process.argv.slice(2);
  const flag = (name: string, fallback?: string): string => {
    const i = rest.indexOf(`--${name}`);
    if (i >= 0) return rest[i + 1];
    if (fallback === undefined) throw new Error(`${script} ${command}: --${name} is required`);
    return fallback;
  };
  return { command, flag };
}

/** Writes texts to out/00000.txt, 00001.txt, ...; prints {out, docs, chars} as one JSON line. */
export async function writeDocuments(out: string, texts: string[]): Promise<void> {
  fs.mkdirSync(out, { recursive: true });
  for (let d = 0; d < texts.length; d++) await writeFileAtomic(path.join(out, `${String(d).padStart(5, '0')}.txt`), texts[d]);
  console.log(JSON.stringify({ out, docs: texts.length, chars: texts.reduce((a, t) => a + t.length, 0) }));
}
