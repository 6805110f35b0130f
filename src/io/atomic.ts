// Atomic file writes (SPEC.md section 7: "Nothing is half-written"). Every file the library or the
// CLI writes (checkpoints, tokenizer.json, metrics, plots) goes through writeFileAtomic: the bytes
// go to `${path}.tmp-<pid>-<random>` in the same folder, are flushed to disk, and only then renamed
// over the target, so a reader sees either the old file or the complete new one, never a prefix.
// Not here: folder-level atomicity (a run folder is several files; callers order their writes).

import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

/** What writeFileAtomic accepts: text (written as UTF-8), bytes, or a sequence of byte chunks. */
export type AtomicData = string | ArrayBufferView | Iterable<ArrayBufferView>;

/**
 * Writes `data` to `path` atomically: a temporary file in the same folder, fsync, then rename.
 * On any error the temporary file is removed and the target is left as it was.
 *
 * @example
 *   await writeFileAtomic('run/metrics.json', JSON.stringify(metrics));
 *   await writeFileAtomic('run/model.bin', [header, body]);   // chunks, written in order
 */
export async function writeFileAtomic(path: string, data: AtomicData): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  let fh: FileHandle | undefined;
  try {
    // 'wx' refuses to reuse an existing name: two writers can never share one temporary file.
    fh = await open(tmp, 'wx', 0o644);
    if (typeof data === 'string') {
      await fh.writeFile(data, 'utf8');
    } else if (ArrayBuffer.isView(data)) {
      await writeAll(fh, data);
    } else {
      for (const chunk of data) await writeAll(fh, chunk);
    }
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
  } catch (err) {
    if (fh !== undefined) await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await syncFolder(dirname(path));
}

async function writeAll(fh: FileHandle, view: ArrayBufferView): Promise<void> {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done);
    done += bytesWritten;
  }
}

// The rename is durable only once the folder entry is flushed. Some platforms (Windows) cannot
// open a folder for fsync; the write itself has already succeeded there, so failures are ignored.
async function syncFolder(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // best effort, see above
  } finally {
    if (fh !== undefined) await fh.close().catch(() => undefined);
  }
}
