// A one-line progress bar on stderr: redrawn in place on a terminal, printed every tenth of the
// way (and at the end) when stderr is a file or a CI log, so logs stay short.

export class Progress {
  private readonly start = Date.now();
  private lastDecile = -1;
  private readonly tty = process.stderr.isTTY === true;

  constructor(private readonly label: string, private total: number, private readonly quiet = false) {}

  /** Changes the total (a time-budgeted run learns its step count after a few steps). */
  setTotal(total: number): void {
    this.total = total;
  }

  update(done: number, fields: Record<string, string> = {}): void {
    if (this.quiet) return;
    const frac = this.total > 0 ? Math.min(1, done / this.total) : 1;
    const elapsed = (Date.now() - this.start) / 1000;
    const eta = frac > 0 ? elapsed * (1 - frac) / frac : NaN;
    const width = 24;
    const filled = Math.round(frac * width);
    const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    const extra = Object.entries(fields).map(([k, v]) => `${k} ${v}`).join(' · ');
    const line = `${this.label} ${bar} ${done}/${this.total} · ${extra}${extra ? ' · ' : ''}${formatTime(elapsed)} elapsed, ETA ${formatTime(eta)}`;
    if (this.tty) {
      process.stderr.write(`\r\x1b[2K${line}`);
      if (done >= this.total) process.stderr.write('\n');
      return;
    }
    const decile = Math.floor(frac * 10);
    if (decile !== this.lastDecile || done >= this.total) {
      this.lastDecile = decile;
      process.stderr.write(line + '\n');
    }
  }
}

export function formatTime(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.round(s - m * 60)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** 1234 -> "1.2k", for tokens/s. */
export function formatCount(x: number): string {
  if (x >= 1e6) return `${(x / 1e6).toFixed(1)}M`;
  if (x >= 1e3) return `${(x / 1e3).toFixed(1)}k`;
  return x.toFixed(0);
}
