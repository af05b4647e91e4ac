// Package tokenizer turns text into token ids and back for fedtune's models.
//
// Two tokenizers are provided behind one interface, Tokenizer:
//
//   - Byte: every byte of the UTF-8 (or arbitrary) input is one token whose id
//     is the byte value (0–255). There is no BOS/EOS token. Any byte string
//     round-trips exactly, invalid UTF-8 included. It needs no files, so the
//     tiny test models use it.
//   - BPE: a Hugging Face tokenizer.json with a BPE model, read as Hugging
//     Face's tokenizers reads it: the byte-level kind (GPT-2, Llama 3,
//     SmolLM) and the SentencePiece kind (Llama 2, TinyLlama, Mistral:
//     byte_fallback, unk_token, fuse_unk, ignore_merges), merges as "a b" or
//     ["a", "b"]. Normalizers NFC, NFD, NFKC, NFKD, Lowercase, Prepend,
//     Replace, Strip and Sequence; pre-tokenizers ByteLevel (with or without
//     its regex, add_prefix_space), Split (String or Oniguruma-style Regex
//     patterns, look-around included, run by regexp2; every behaviour and
//     invert), Metaspace (prepend_scheme, split), Digits and Sequence; added
//     tokens with special, lstrip, rstrip, normalized and single_word;
//     post-processors TemplateProcessing, ByteLevel and Sequence; decoders
//     ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace and Sequence.
//     Anything else (another model type, dropout, truncation, padding, a
//     normalizer such as Precompiled or BertNormalizer, …) is refused with
//     ErrUnsupported and the JSON path of the feature.
//
// Encode leaves out what the post-processor adds; EncodeSpecial (BPE, or the
// EncodeSpecial function for any Tokenizer) puts it in, as Hugging Face's
// encode(text, add_special_tokens=True). Decode keeps special tokens. BPE's
// BOS and EOS come from tokenizer_config.json and generation_config.json.
//
// Load picks between the two by looking for tokenizer.json in a model folder
// and checks the ids fit the model; Open reads a folder's tokenizer.json and
// its config files; DecodeBPE reads tokenizer.json bytes.
//
// The ids and decodings equal those of Hugging Face's Rust tokenizers and of
// tokenizers.js on real Llama 2 style and Llama 3 tokenizer.json files (see
// parity_test.go and `make test-deps`).
package tokenizer
