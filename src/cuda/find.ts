// Locates the three shared libraries the CUDA backend binds through koffi: the driver (libcuda.so.1,
// installed with the NVIDIA driver), NVRTC (libnvrtc.so.*, the run-time compiler of the toolkit) and
// cuBLAS (libcublas.so.*). It only looks at files: nothing is loaded or initialised here, so the
// report is safe to print from `sparsek doctor` on any machine. Not Windows or macOS (the backend
// is Linux-only), and not the toolkit's nvcc, which nothing here runs.
// Search order, first hit wins: $CUDA_HOME/lib64 (and $CUDA_PATH), each $LD_LIBRARY_PATH entry,
// /usr/local/cuda/lib64, /usr/local/nvidia/lib64 (where containers mount the driver),
// /usr/lib/x86_64-linux-gnu, /usr/lib64, then whatever `ldconfig -p` lists.
// SPEC.md: section 7, `sparsek doctor` ("what devices and libraries were found, and why any was not used").

import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/** One library the backend needs. */
export type CudaLibraryName = 'cuda' | 'nvrtc' | 'cublas';

export interface LibraryHit {
  name: CudaLibraryName;
  /** Absolute path of the library found, or null. */
  path: string | null;
  /** Where it was found: a directory of the search list, or 'ldconfig'. */
  source: string | null;
}

export interface CudaLibraryReport {
  cuda: LibraryHit;
  nvrtc: LibraryHit;
  cublas: LibraryHit;
  /** Directories looked in, in order (ldconfig last). */
  searched: string[];
  /** The names of the libraries not found; empty when the backend can be loaded. */
  missing: CudaLibraryName[];
  /** Lines for people: one per library, then what to do about any that is missing. */
  lines: string[];
}

// File names each library may have; a versioned name like libnvrtc.so.13 is matched by pattern so
// that a toolkit newer than this file is still found. The driver's soname has been .so.1 forever;
// plain libcuda.so is the toolkit's link-time stub, which cannot initialise a device, so it is
// accepted only where libcuda.so.1 sits beside it.
const PATTERNS: Record<CudaLibraryName, RegExp> = {
  cuda: /^libcuda\.so\.1$/,
  nvrtc: /^libnvrtc\.so(\.\d+)*$/,
  cublas: /^libcublas\.so(\.\d+)*$/,
};

const WHAT: Record<CudaLibraryName, string> = {
  cuda: 'libcuda.so.1 (NVIDIA driver)',
  nvrtc: 'libnvrtc.so (CUDA toolkit, run-time compiler)',
  cublas: 'libcublas.so (CUDA toolkit, cuBLAS)',
};

/** The directories to search, in order, for an environment (process.env by default). */
export function searchDirectories(env: NodeJS.ProcessEnv = process.env): string[] {
  const dirs: string[] = [];
  for (const home of [env.CUDA_HOME, env.CUDA_PATH]) {
    if (home) dirs.push(join(home, 'lib64'), join(home, 'lib'));
  }
  for (const d of (env.LD_LIBRARY_PATH ?? '').split(':')) if (d) dirs.push(d);
  dirs.push('/usr/local/cuda/lib64', '/usr/local/nvidia/lib64', '/usr/lib/x86_64-linux-gnu', '/usr/lib64');
  return [...new Set(dirs)];
}

/** Finds the three libraries; never throws. */
export function findCudaLibraries(env: NodeJS.ProcessEnv = process.env): CudaLibraryReport {
  const dirs = searchDirectories(env);
  const hits: Record<CudaLibraryName, LibraryHit> = {
    cuda: { name: 'cuda', path: null, source: null },
    nvrtc: { name: 'nvrtc', path: null, source: null },
    cublas: { name: 'cublas', path: null, source: null },
  };
  const names: CudaLibraryName[] = ['cuda', 'nvrtc', 'cublas'];
  for (const dir of dirs) {
    const files = listDir(dir);
    for (const name of names) {
      if (hits[name].path !== null) continue;
      const file = pick(files.filter((f) => PATTERNS[name].test(f)));
      if (file !== null) hits[name] = { name, path: join(dir, file), source: dir };
    }
  }
  const searched = [...dirs];
  if (names.some((n) => hits[n].path === null)) {
    searched.push('ldconfig -p');
    const cache = ldconfigEntries();
    for (const name of names) {
      if (hits[name].path !== null) continue;
      const entry = pick(cache.filter((e) => PATTERNS[name].test(e.file)).map((e) => e.path));
      if (entry !== null) hits[name] = { name, path: entry, source: 'ldconfig' };
    }
  }
  const missing = names.filter((n) => hits[n].path === null);
  const lines = names.map((n) =>
    hits[n].path !== null ? `${n.padEnd(7)} ${hits[n].path}` : `${n.padEnd(7)} missing: ${WHAT[n]} not found`,
  );
  if (missing.length > 0) {
    lines.push(`searched: ${searched.join(', ')}`);
    if (missing.includes('cuda')) lines.push('the driver library comes with the NVIDIA driver; without it there is no usable GPU here');
    if (missing.includes('nvrtc') || missing.includes('cublas')) {
      lines.push('install the CUDA toolkit (12 or newer) and set CUDA_HOME, or add its lib64 to LD_LIBRARY_PATH');
    }
  }
  return { cuda: hits.cuda, nvrtc: hits.nvrtc, cublas: hits.cublas, searched, missing, lines };
}

/** One line saying why the backend cannot load, or null when every library was found. */
export function missingReason(report: CudaLibraryReport): string | null {
  if (report.missing.length === 0) return null;
  return `${report.missing.map((n) => WHAT[n]).join(', ')} not found (searched ${report.searched.join(', ')})`;
}

/** Where libnccl (NCCL, used by `train --gpus N`) was found, or null; and where it was looked for. */
export interface NcclLibraryHit {
  path: string | null;
  source: string | null;
  searched: string[];
}

/**
 * Finds libnccl.so.2 (NCCL is not part of the CUDA toolkit): $NCCL_HOME/lib, then the CUDA search
 * list above, then the pip wheel nvidia-nccl-cu* (which PyTorch installs) under the usual Python
 * prefixes, then wherever python3 on PATH imports that wheel from, then `ldconfig -p`. Loads
 * nothing; never throws.
 */
export function findNcclLibrary(env: NodeJS.ProcessEnv = process.env): NcclLibraryHit {
  const pattern = /^libnccl\.so(\.\d+)*$/;
  const dirs: string[] = [];
  if (env.NCCL_HOME) dirs.push(join(env.NCCL_HOME, 'lib'), join(env.NCCL_HOME, 'lib64'));
  dirs.push(...searchDirectories(env));
  // site-packages/nvidia/nccl/lib of a virtualenv, conda, the system and the user's Python.
  for (const prefix of [env.VIRTUAL_ENV, env.CONDA_PREFIX, '/opt/conda', '/usr/local', '/usr', env.HOME && join(env.HOME, '.local')]) {
    if (!prefix) continue;
    for (const py of listDir(join(prefix, 'lib')).filter((d) => /^python3\.\d+$/.test(d)).sort()) {
      for (const site of ['site-packages', 'dist-packages']) dirs.push(join(prefix, 'lib', py, site, 'nvidia', 'nccl', 'lib'));
    }
  }
  const searched = [...new Set(dirs)];
  for (const dir of searched) {
    const file = pick(listDir(dir).filter((f) => pattern.test(f)));
    if (file !== null) return { path: join(dir, file), source: dir, searched };
  }
  // A Python elsewhere (a virtualenv that is not active): ask the python3 on PATH where the wheel is.
  const wheel = pythonNcclDir(env);
  searched.push('python3 -c "import nvidia.nccl"');
  if (wheel !== null) {
    const file = pick(listDir(wheel).filter((f) => pattern.test(f)));
    if (file !== null) return { path: join(wheel, file), source: wheel, searched };
  }
  searched.push('ldconfig -p');
  const entry = pick(ldconfigEntries().filter((e) => pattern.test(e.file)).map((e) => e.path));
  return { path: entry, source: entry === null ? null : 'ldconfig', searched };
}

/** The lib folder of the nvidia-nccl wheel as python3 sees it, or null (no python3, no wheel). */
function pythonNcclDir(env: NodeJS.ProcessEnv): string | null {
  try {
    const out = execFileSync('python3', ['-c', 'import nvidia.nccl as m; print(list(m.__path__)[0])'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000, env });
    return out.trim() ? join(out.trim(), 'lib') : null;
  } catch {
    return null;
  }
}

function listDir(dir: string): string[] {
  try {
    return existsSync(dir) ? readdirSync(dir) : [];
  } catch {
    return []; // unreadable directories are simply not searched
  }
}

/** Of several candidates, the unversioned name if present, else the highest version (libnvrtc.so.13 over .12). */
function pick(candidates: string[]): string | null {
  if (candidates.length === 0) return null;
  const version = (f: string): number[] => (f.match(/\.so((?:\.\d+)*)$/)?.[1] ?? '').split('.').filter(Boolean).map(Number);
  return [...candidates].sort((a, b) => {
    const va = version(a), vb = version(b);
    if (va.length === 0 || vb.length === 0) return va.length - vb.length; // bare .so first
    for (let i = 0; i < Math.max(va.length, vb.length); i++) {
      const d = (vb[i] ?? -1) - (va[i] ?? -1);
      if (d !== 0) return d;
    }
    return 0;
  })[0];
}

/** (file, path) pairs of the dynamic linker's cache; empty if ldconfig is absent (e.g. not on PATH). */
function ldconfigEntries(): { file: string; path: string }[] {
  for (const exe of ['ldconfig', '/sbin/ldconfig', '/usr/sbin/ldconfig']) {
    try {
      const text = execFileSync(exe, ['-p'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 });
      const out: { file: string; path: string }[] = [];
      // lines look like: "\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1"
      for (const line of text.split('\n')) {
        const m = line.match(/^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S+)/);
        if (m && !m[2].includes('i386') && !m[2].includes('x32')) out.push({ file: m[1], path: m[3] });
      }
      return out;
    } catch {
      // try the next location
    }
  }
  return [];
}
