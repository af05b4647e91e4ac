// Package tokenizer turns text into token ids and back for fedtune's models.
//
// Two tokenizers are provided behind one interface, Tokenizer:
//
//   - Byte: every byte of the UTF-8 (or arbitrary) input is one token whose id
//     is the byte value (0–255). There is no BOS/EOS token. Any byte string
//     round-trips exactly, invalid UTF-8 included. It needs no files, so the
//     tiny test models use it.
//   - BPE: a Hugging Face tokenizer.json of the byte-level BPE kind used by
//     GPT-2 and LLaMA 3 (model.type "BPE", a vocab, merges, a ByteLevel
//     pre-tokenizer and decoder, optional added_tokens).
//
// Load picks between them by looking for tokenizer.json in a model folder.
package tokenizer
