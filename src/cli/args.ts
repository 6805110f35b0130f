// Flat `--key value` options for the CLI: one table per command, unknown flags and malformed
// values are OptionErrors that name the flag and what it takes. Built on node:util parseArgs.

import { parseArgs } from 'node:util';
import { OptionError } from '../core/errors.js';

export type OptionKind = 'string' | 'int' | 'number' | 'boolean' | 'strings';

export interface OptionSpec {
  kind: OptionKind;
  help: string;
  choices?: readonly string[];
}

export type OptionTable = Record<string, OptionSpec>;
export type ParsedValue = string | number | boolean | string[];

/** Parses argv against the table; returns only the options that were given. */
export function parseOptions(command: string, argv: string[], table: OptionTable): Record<string, ParsedValue> {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {};
  for (const [name, spec] of Object.entries(table)) {
    options[name] = spec.kind === 'boolean' ? { type: 'boolean' } : spec.kind === 'strings' ? { type: 'string', multiple: true } : { type: 'string' };
  }
  // A 'strings' option takes every value up to the next flag (`--runs a b c`), as SPEC writes it.
  const args: string[] = [];
  let many: string | null = null;
  for (const a of argv) {
    if (a.startsWith('--')) {
      const name = a.slice(2).split('=')[0];
      many = table[name]?.kind === 'strings' && !a.includes('=') ? a : null;
      args.push(a);
    } else if (many !== null && args[args.length - 1] !== many) {
      args.push(many, a);
    } else {
      args.push(a);
    }
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (e) {
    const msg = (e as Error).message.replace(/\s*To specify.*$/s, '').replace(/\s+/g, ' ').replace(/\.$/, '');
    throw new OptionError(`sparsek ${command}: ${msg}. Options: ${Object.keys(table).map((k) => '--' + k).join(' ')}`);
  }
  const out: Record<string, ParsedValue> = {};
  for (const [name, raw] of Object.entries(parsed.values)) {
    const spec = table[name];
    if (raw === undefined) continue;
    out[name] = convert(command, name, spec, raw as string | boolean | string[]);
  }
  return out;
}

function convert(command: string, name: string, spec: OptionSpec, raw: string | boolean | string[]): ParsedValue {
  const bad = (what: string) => new OptionError(`sparsek ${command}: --${name} takes ${what}, got ${JSON.stringify(raw)}`);
  switch (spec.kind) {
    case 'boolean':
      return raw as boolean;
    case 'strings':
      return raw as string[];
    case 'string':
      if (spec.choices && !spec.choices.includes(raw as string)) throw bad(`one of ${spec.choices.join(', ')}`);
      return raw as string;
    case 'int': {
      const x = Number(raw);
      if (!/^-?\d+$/.test(String(raw).trim()) || !Number.isSafeInteger(x)) throw bad('an integer');
      return x;
    }
    case 'number': {
      const x = Number(raw);
      if (String(raw).trim() === '' || !Number.isFinite(x)) throw bad('a finite number');
      return x;
    }
  }
}

/** Help text for a command's table. */
export function formatHelp(table: OptionTable): string {
  const rows = Object.entries(table).map(([name, s]) => {
    const arg = s.kind === 'boolean' ? '' : s.choices ? ` ${s.choices.join('|')}` : s.kind === 'strings' ? ' X...' : ` ${s.kind === 'string' ? 'X' : 'N'}`;
    return [`--${name}${arg}`, s.help];
  });
  const w = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([a, h]) => `  ${a.padEnd(w)}  ${h}`).join('\n');
}
