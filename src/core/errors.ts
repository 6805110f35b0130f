// Typed errors for every kind of bad input the library and CLI can meet.
// Each names the argument, what was wrong, and what was expected, so a user can fix the call
// without reading the source. Not a logging layer: callers throw these, the CLI prints them.

/** Base class: `code` is stable and machine-readable; `message` is for people. */
export class SparsekError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A buffer whose length does not match the shape it was declared with. */
export class ShapeError extends SparsekError {
  constructor(readonly arg: string, readonly expected: string, readonly got: string) {
    super('E_SHAPE', `${arg}: expected ${expected}, got ${got}`);
  }
}

/** A scalar argument outside its domain (negative K, non-integer W, NH % NKV != 0, ...). */
export class ArgumentError extends SparsekError {
  constructor(readonly arg: string, readonly expected: string, readonly got: unknown) {
    super('E_ARGUMENT', `${arg}: expected ${expected}, got ${formatValue(got)}`);
  }
}

/** NaN or +-Infinity where only finite numbers make sense. */
export class NonFiniteError extends SparsekError {
  constructor(readonly arg: string, readonly index: number, readonly value: number) {
    super('E_NON_FINITE', `${arg}: expected finite numbers, got ${value} at index ${index}`);
  }
}

/** A command-line flag or config key that does not exist, or has a malformed value. */
export class OptionError extends SparsekError {
  constructor(message: string) {
    super('E_OPTION', message);
  }
}

/** A checkpoint, safetensors file or model folder that is missing, corrupt or mismatched. */
export class CheckpointError extends SparsekError {
  constructor(readonly path: string, detail: string) {
    super('E_CHECKPOINT', `${path}: ${detail}`);
  }
}

/** A corpus that is missing or has nothing to train on. */
export class DataError extends SparsekError {
  constructor(message: string) {
    super('E_DATA', message);
  }
}

/** Training produced a non-finite loss or gradient. */
export class DivergenceError extends SparsekError {
  constructor(readonly step: number, detail: string) {
    super('E_DIVERGED', `training diverged at step ${step}: ${detail} (try a lower --lr or a smaller model)`);
  }
}

/** A device that was asked for but cannot be used here. */
export class DeviceError extends SparsekError {
  constructor(readonly device: string, detail: string) {
    super('E_DEVICE', `device '${device}' is not available: ${detail}`);
  }
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v);
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}
