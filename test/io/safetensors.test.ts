// Tests for src/io/safetensors.ts and src/io/atomic.ts. Oracles: a file assembled byte by byte
// from the format's definition, IEEE bit patterns worked out by hand, and the file system itself
// (no temporary file may survive, the old target must stay intact).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  readSafetensors, readSafetensorsHeader, writeSafetensors, toFloat32, fromFloat32,
  floatToHalfBits, halfBitsToFloat, floatToBf16Bits,
} from '../../src/io/safetensors.js';
import type { SafeTensor } from '../../src/io/safetensors.js';
import { writeFileAtomic } from '../../src/io/atomic.js';
import { CheckpointError, ShapeError, ArgumentError } from '../../src/core/errors.js';

let dir = '';
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sparsek-st-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** ASCII text as bytes, one char code per byte (the test's headers are pure ASCII). */
function ascii(s: string): number[] {
  return [...s].map((c) => {
    const code = c.charCodeAt(0);
    assert.ok(code < 128);
    return code;
  });
}

/** A safetensors file from a header string and raw data bytes: u64 LE length, header, data. */
function fileBytes(header: string, data: number[], lengthOverride?: number): Uint8Array {
  const h = ascii(header);
  const n = lengthOverride ?? h.length;
  const len = [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff, 0, 0, 0, 0];
  return Uint8Array.from([...len, ...h, ...data]);
}

function put(name: string, bytes: Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
}

function tempFilesIn(folder: string): string[] {
  return readdirSync(folder).filter((f) => f.includes('.tmp-'));
}

describe('safetensors: reading a file built byte by byte', () => {
  test('dtypes, shapes, values and metadata come back exactly', async () => {
    const header =
      '{"__metadata__":{"format":"pt","step":"7"},' +
      '"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
      '"i":{"dtype":"I64","shape":[1],"data_offsets":[8,16]},' +
      '"h":{"dtype":"F16","shape":[],"data_offsets":[16,18]},' +
      '"b":{"dtype":"BF16","shape":[1,1],"data_offsets":[18,20]},' +
      '"u":{"dtype":"U8","shape":[3],"data_offsets":[20,23]},' +
      '"e":{"dtype":"F32","shape":[0,5],"data_offsets":[23,23]},' +
      '"n":{"dtype":"I32","shape":[1],"data_offsets":[23,27]},' +
      '"d":{"dtype":"F64","shape":[1],"data_offsets":[27,35]}}';
    const data = [
      0x00, 0x00, 0x80, 0x3f, // F32 1.0   = 0x3f800000, little-endian
      0x00, 0x00, 0x20, 0xc0, // F32 -2.5  = 0xc0200000
      0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // I64 -3
      0xff, 0x7b, // F16 65504 = 0x7bff
      0x20, 0xc0, // BF16 -2.5 = 0xc020
      1, 2, 255, // U8
      0xfe, 0xff, 0xff, 0x7f, // I32 2^31 - 2
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0xbf, // F64 -1.0 = 0xbff0000000000000
    ];
    const path = put('hand.safetensors', fileBytes(header, data));
    const { tensors, metadata } = await readSafetensors(path);
    assert.deepEqual(metadata, { format: 'pt', step: '7' });
    assert.deepEqual([...tensors.keys()], ['w', 'i', 'h', 'b', 'u', 'e', 'n', 'd']);
    const w = tensors.get('w')!;
    assert.equal(w.dtype, 'F32');
    assert.deepEqual(w.shape, [2]);
    assert.ok(w.data instanceof Float32Array);
    assert.deepEqual([...w.data], [1, -2.5]);
    const i = tensors.get('i')!;
    assert.ok(i.data instanceof BigInt64Array);
    assert.equal(i.data[0], -3n);
    const h = tensors.get('h')!;
    assert.deepEqual(h.shape, []);
    assert.deepEqual([...h.data], [0x7bff]);
    assert.deepEqual([...toFloat32(h)], [65504]);
    const b = tensors.get('b')!;
    assert.deepEqual(b.shape, [1, 1]);
    assert.deepEqual([...toFloat32(b)], [-2.5]);
    assert.deepEqual([...tensors.get('u')!.data], [1, 2, 255]);
    const e = tensors.get('e')!;
    assert.deepEqual(e.shape, [0, 5]);
    assert.equal(e.data.length, 0);
    assert.deepEqual([...tensors.get('n')!.data], [2 ** 31 - 2]);
    assert.deepEqual([...tensors.get('d')!.data], [-1]);

    const hdr = await readSafetensorsHeader(path);
    assert.equal(hdr.dataStart, 8 + header.length);
    assert.equal(hdr.fileSize, 8 + header.length + data.length);
    assert.deepEqual(hdr.tensors.get('n'), { dtype: 'I32', shape: [1], dataOffsets: [23, 27] });
  });

  test('a header padded with trailing spaces (as the reference writer pads) is accepted', async () => {
    const header = '{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}' + '   ';
    const { tensors } = await readSafetensors(put('padded.safetensors', fileBytes(header, [42])));
    assert.deepEqual([...tensors.get('x')!.data], [42]);
  });
});

describe('safetensors: write then read', () => {
  test('round trip of every dtype, with the file layout checked independently', async () => {
    const tensors: Record<string, SafeTensor> = {
      'blocks.0.attn.w': { dtype: 'F32', shape: [3, 7], data: Float32Array.from({ length: 21 }, (_, i) => i * 0.5 - 3) },
      odd: { dtype: 'U8', shape: [3], data: Uint8Array.from([9, 8, 7]) }, // leaves the next tensor unaligned
      f64: { dtype: 'F64', shape: [2], data: Float64Array.from([Math.PI, -1e300]) },
      i64: { dtype: 'I64', shape: [2], data: BigInt64Array.from([-(2n ** 62n), 5n]) },
      u64: { dtype: 'U64', shape: [1], data: BigUint64Array.from([2n ** 64n - 1n]) },
      i32: { dtype: 'I32', shape: [2], data: Int32Array.from([-7, 2 ** 31 - 1]) },
      bf: fromFloat32([1, -2.5], [2], 'BF16'),
      hf: fromFloat32([65504, 2 ** -24], [2, 1], 'F16'),
      scalar: { dtype: 'F32', shape: [], data: Float32Array.from([0.25]) },
      empty: { dtype: 'F32', shape: [4, 0], data: new Float32Array(0) },
      'ünïcode name': { dtype: 'I8', shape: [1], data: Int8Array.from([-128]) },
    };
    const path = join(dir, 'rt.safetensors');
    await writeSafetensors(path, tensors, { note: 'héllo', step: '12' });
    assert.deepEqual(tempFilesIn(dir), []);

    // Independent parse of the layout: u64 LE length, JSON header, 8-aligned data start.
    const raw = readFileSync(path);
    const n = Number(new DataView(raw.buffer, raw.byteOffset).getBigUint64(0, true));
    assert.equal((8 + n) % 8, 0, 'data section starts 8-aligned');
    const header = JSON.parse(raw.subarray(8, 8 + n).toString('utf8'));
    assert.deepEqual(header.__metadata__, { note: 'héllo', step: '12' });
    assert.deepEqual(header['blocks.0.attn.w'], { dtype: 'F32', shape: [3, 7], data_offsets: [0, 84] });
    assert.deepEqual(header.odd.data_offsets, [84, 87]);
    const dataView = new DataView(raw.buffer, raw.byteOffset + 8 + n);
    assert.equal(dataView.getFloat32(4, true), -2.5); // element 1 of the first tensor
    assert.equal(dataView.getFloat64(header.f64.data_offsets[0], true), Math.PI);
    assert.equal(raw.length, 8 + n + header['ünïcode name'].data_offsets[1]);

    const back = await readSafetensors(path);
    assert.deepEqual(back.metadata, { note: 'héllo', step: '12' });
    assert.deepEqual([...back.tensors.keys()], Object.keys(tensors));
    for (const [name, t] of Object.entries(tensors)) {
      const r = back.tensors.get(name)!;
      assert.equal(r.dtype, t.dtype, name);
      assert.deepEqual(r.shape, t.shape, name);
      assert.equal(r.data.constructor, t.data.constructor, name);
      assert.deepEqual([...(r.data as ArrayLike<unknown> & Iterable<unknown>)], [...(t.data as Iterable<unknown>)], name);
    }
    assert.deepEqual([...toFloat32(back.tensors.get('bf')!)], [1, -2.5]);
    assert.deepEqual([...toFloat32(back.tensors.get('hf')!)], [65504, 2 ** -24]);
  });

  test('bad tensors are refused before anything is written', async () => {
    const path = join(dir, 'bad-write.safetensors');
    writeFileSync(path, 'previous contents');
    await assert.rejects(
      writeSafetensors(path, { w: { dtype: 'F32', shape: [2, 3], data: new Float32Array(5) } }),
      (e: unknown) => e instanceof ShapeError && /tensors\['w'\]\.data/.test(e.message) && /length 6/.test(e.message),
    );
    await assert.rejects(
      writeSafetensors(path, { w: { dtype: 'F32', shape: [2], data: new Float64Array(2) } }),
      (e: unknown) => e instanceof ArgumentError && /Float32Array/.test(e.message),
    );
    await assert.rejects(
      writeSafetensors(path, { w: { dtype: 'F8' as 'F32', shape: [1], data: new Float32Array(1) } }),
      (e: unknown) => e instanceof ArgumentError && /dtype/.test(e.message),
    );
    await assert.rejects(
      writeSafetensors(path, { w: { dtype: 'F32', shape: [-1], data: new Float32Array(1) } }),
      ArgumentError,
    );
    await assert.rejects(writeSafetensors(path, {}, { k: 3 as unknown as string }), ArgumentError);
    assert.equal(readFileSync(path, 'utf8'), 'previous contents');
    assert.deepEqual(tempFilesIn(dir), []);
  });
});

describe('safetensors: corrupt files raise CheckpointError naming the file and the problem', () => {
  const good = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[2],"data_offsets":[8,10]}}';
  const goodData = [0, 0, 128, 63, 0, 0, 0, 64, 1, 2];

  const cases: [string, () => Uint8Array, RegExp][] = [
    ['shorter than the length field', () => Uint8Array.from([1, 0, 0]), /truncated.*8-byte/],
    ['header length beyond the file', () => fileBytes(good, goodData, 5000), /header length 5000 runs beyond/],
    ['header not JSON', () => fileBytes('{"a": nope}', []), /not valid JSON/],
    ['header a JSON array', () => fileBytes('[1,2]', []), /not a JSON object/],
    ['unknown dtype', () => fileBytes('{"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}', [0, 0, 0, 0]), /unknown dtype "F12"/],
    ['missing shape', () => fileBytes('{"a":{"dtype":"F32","data_offsets":[0,4]}}', [0, 0, 0, 0]), /shape/],
    ['negative offsets', () => fileBytes('{"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}', [0]), /data_offsets/],
    ['offsets ending before they begin', () => fileBytes('{"a":{"dtype":"U8","shape":[0],"data_offsets":[3,1]}}', [0, 0, 0]), /end before they begin/],
    ['offsets beyond the data', () => fileBytes('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}', [1, 2]), /ends at byte 4.*only 2 bytes/],
    ['overlapping tensors', () => fileBytes('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}', [1, 2, 3]), /'a' and 'b' overlap/],
    ['offsets not matching shape * dtype size', () => fileBytes('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', goodData.slice(0, 8)), /span 8 bytes.*needs 12/],
    ['a gap between tensors', () => fileBytes('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}', [1, 2, 3]), /1 unused bytes.*'b'/],
    ['trailing bytes', () => fileBytes(good, [...goodData, 0, 0]), /2 trailing bytes/],
    ['truncated data (file cut short)', () => fileBytes(good, goodData).subarray(0, 8 + good.length + 9), /truncated/],
    ['metadata value not a string', () => fileBytes('{"__metadata__":{"k":1}}', []), /__metadata__\['k'\]/],
    ['header of 1 byte', () => fileBytes('{', []), /too short/],
  ];
  for (const [what, make, pattern] of cases) {
    test(what, async () => {
      const path = put(`bad-${what.replace(/\W+/g, '-')}.safetensors`, make());
      for (const read of [readSafetensors, readSafetensorsHeader]) {
        await assert.rejects(read(path), (e: unknown) => {
          assert.ok(e instanceof CheckpointError, `expected CheckpointError, got ${String(e)}`);
          assert.ok(e.message.startsWith(path), `message names the file: ${e.message}`);
          assert.match(e.message, pattern);
          return true;
        });
      }
    });
  }

  test('header that is not UTF-8', async () => {
    const bytes = fileBytes('{"a":1}', []);
    bytes[10] = 0xff;
    await assert.rejects(readSafetensors(put('bad-utf8.safetensors', bytes)), /not valid UTF-8/);
  });

  test('missing file and folder', async () => {
    await assert.rejects(readSafetensors(join(dir, 'nope.safetensors')), (e: unknown) => e instanceof CheckpointError && /file not found/.test(e.message));
    await assert.rejects(readSafetensors(dir), CheckpointError);
  });

  test('the uncorrupted file of these cases reads fine (the cases fail for their stated reason)', async () => {
    const { tensors } = await readSafetensors(put('good.safetensors', fileBytes(good, goodData)));
    assert.deepEqual([...tensors.get('a')!.data], [1, 2]);
  });
});

describe('float16 / bfloat16 conversions against hand-worked IEEE bit patterns', () => {
  test('half bits -> float32', () => {
    const bits = [0x3c00, 0xc100, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x8000, 0x7c00, 0xfc00, 0x3555];
    const want = [1, -2.5, 65504, 2 ** -24, 1023 * 2 ** -24, 2 ** -14, -0, Infinity, -Infinity, Math.fround(0x155 / 1024 * 0.25 + 0.25)];
    const got = toFloat32({ dtype: 'F16', shape: [bits.length], data: Uint16Array.from(bits) });
    assert.deepEqual([...got], want);
    assert.ok(Object.is(got[6], -0));
    assert.ok(Number.isNaN(toFloat32({ dtype: 'F16', shape: [1], data: Uint16Array.from([0x7e00]) })[0]));
  });

  test('bfloat16 bits -> float32', () => {
    const bits = [0x3f80, 0xc020, 0x477f, 0x4780, 0x0001, 0x7f80, 0x8000];
    const want = [1, -2.5, 65280, 65536, 2 ** -133, Infinity, -0];
    const got = toFloat32({ dtype: 'BF16', shape: [bits.length], data: Uint16Array.from(bits) });
    assert.deepEqual([...got], want);
    assert.ok(Number.isNaN(toFloat32({ dtype: 'BF16', shape: [1], data: Uint16Array.from([0x7fc1]) })[0]));
  });

  test('float32 -> half bits, round to nearest even, subnormals and overflow', () => {
    const cases: [number, number][] = [
      [1, 0x3c00], [-2.5, 0xc100], [65504, 0x7bff],
      [65519, 0x7bff], // below the midpoint 65520 between 65504 and 65536
      [65520, 0x7c00], // the midpoint: ties to even, and the even neighbour is Infinity
      [2 ** -14, 0x0400], [2 ** -24, 0x0001], [1023 * 2 ** -24, 0x03ff],
      [2 ** -25, 0x0000], // half of the smallest subnormal: tie, rounds to even (zero)
      [1.5 * 2 ** -25, 0x0001], [3 * 2 ** -25, 0x0002], [2 ** -26, 0x0000],
      [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [1 + 2 ** -10, 0x3c01],
      [-0, 0x8000], [1e10, 0x7c00], [-Infinity, 0xfc00],
    ];
    for (const [x, h] of cases) assert.equal(floatToHalfBits(x), h, `floatToHalfBits(${x})`);
    const nan = floatToHalfBits(NaN);
    assert.ok((nan & 0x7c00) === 0x7c00 && (nan & 0x3ff) !== 0);
  });

  test('float32 -> bfloat16 bits, round to nearest even', () => {
    const cases: [number, number][] = [
      [1, 0x3f80], [-2.5, 0xc020], [65504, 0x4780],
      [1 + 2 ** -8, 0x3f80], // tie between 0x3f80 and 0x3f81: even
      [1 + 3 * 2 ** -8, 0x3f82], // tie between 0x3f81 and 0x3f82: even
      [1 + 2 ** -8 + 2 ** -20, 0x3f81], // just above the tie
      [2 ** -133, 0x0001], [3.4e38, 0x7f80], [-0, 0x8000],
    ];
    for (const [x, b] of cases) assert.equal(floatToBf16Bits(x), b, `floatToBf16Bits(${x})`);
    assert.equal(floatToBf16Bits(NaN) & 0x7fc0, 0x7fc0);
  });

  test('every non-NaN half survives half -> float -> half', () => {
    for (let h = 0; h < 65536; h++) {
      if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0) continue;
      assert.equal(floatToHalfBits(halfBitsToFloat(h)), h);
    }
  });
});

describe('writeFileAtomic', () => {
  test('writes strings, bytes and chunks, leaving no temporary file', async () => {
    const p = join(dir, 'a.txt');
    await writeFileAtomic(p, 'héllo');
    assert.equal(readFileSync(p, 'utf8'), 'héllo');
    await writeFileAtomic(p, Uint8Array.from([104, 105]));
    assert.equal(readFileSync(p, 'utf8'), 'hi');
    await writeFileAtomic(p, [Uint8Array.from([97]), new Uint16Array([0x6362])]);
    assert.equal(readFileSync(p, 'utf8'), 'abc');
    assert.deepEqual(tempFilesIn(dir), []);
  });

  test('a failure mid-write removes the temporary file and never touches the target', async () => {
    const sub = join(dir, 'mid');
    mkdirSync(sub);
    const p = join(sub, 'target.bin');
    writeFileSync(p, 'old');
    let sawTemp = false;
    function* chunks(): Generator<Uint8Array> {
      yield Uint8Array.from([1, 2, 3]);
      // Halfway: the bytes so far sit in a temporary file; the target is still the old one.
      sawTemp = tempFilesIn(sub).length === 1;
      assert.equal(readFileSync(p, 'utf8'), 'old');
      throw new Error('disk on fire');
    }
    await assert.rejects(writeFileAtomic(p, chunks()), /disk on fire/);
    assert.ok(sawTemp, 'the partial data went to a temporary file');
    assert.equal(readFileSync(p, 'utf8'), 'old');
    assert.deepEqual(readdirSync(sub), ['target.bin']);
  });

  test('a failed rename (target is a folder) removes the temporary file', async () => {
    const sub = join(dir, 'ren');
    mkdirSync(join(sub, 'target'), { recursive: true });
    writeFileSync(join(sub, 'target', 'keep'), 'x');
    await assert.rejects(writeFileAtomic(join(sub, 'target'), 'data'));
    assert.deepEqual(readdirSync(sub), ['target']);
    assert.deepEqual(readdirSync(join(sub, 'target')), ['keep']);
  });

  test('a missing folder fails without leaving anything behind', async () => {
    await assert.rejects(writeFileAtomic(join(dir, 'no', 'such', 'f.txt'), 'x'), /ENOENT/);
  });
});
