// The byte tokenizer (SPEC.md section 8): token id = one UTF-8 byte, V = 256, nothing to train.
// The baseline vocabulary, and the one to use when a BPE would hide what the model learns.
// Its tokenizer.json is a byte-level BPE with no merges whose vocabulary puts byte b at id b, so
// Hugging Face libraries load it and produce the same ids. Not here: BPE (bpe.ts).

import { ArgumentError } from '../core/errors.js';
import { BYTE_TO_UNICODE, hfTokenizerJSON } from './bpe.js';
import type { Tokenizer } from './index.js';

/** ids 0..255 are the UTF-8 bytes of the text. */
export class ByteTokenizer implements Tokenizer {
  readonly vocabSize = 256;
  private readonly encoder = new TextEncoder();
  // ignoreBOM keeps a leading U+FEFF (the default would drop it and break decode(encode(x)) == x).
  private readonly decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

  /**
   * Text -> its UTF-8 bytes as ids. (Lone UTF-16 surrogates, which have no UTF-8 form, become U+FFFD.)
   *
   * @example
   *   new ByteTokenizer().encode('é!')   // [195, 169, 33]
   */
  encode(text: string): number[] {
    if (typeof text !== 'string') throw new ArgumentError('text', 'a string', text);
    return Array.from(this.encoder.encode(text));
  }

  /** ids -> text; invalid UTF-8 sequences decode to U+FFFD. */
  decode(ids: ArrayLike<number>): string {
    if (ids === null || typeof ids !== 'object' || typeof ids.length !== 'number') throw new ArgumentError('ids', 'an array of token ids', ids);
    const bytes = new Uint8Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id > 255) throw new ArgumentError(`ids[${i}]`, 'a token id in [0, 256)', id);
      bytes[i] = id;
    }
    return this.decoder.decode(bytes);
  }

  toJSON(): object {
    return hfTokenizerJSON(BYTE_TO_UNICODE, [], [], {
      addPrefixSpace: false, useRegex: true, normalizer: null, ignoreMerges: false, unkToken: null,
    });
  }
}
