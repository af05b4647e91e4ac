// Package safetensors reads and writes the safetensors tensor format
// (https://huggingface.co/docs/safetensors) and defines fedtune's weight
// digest.
//
// A file is an 8-byte little-endian header length N, N bytes of JSON header
// mapping tensor names to {"dtype", "shape", "data_offsets"} (plus an
// optional "__metadata__" string map), then the data buffer. Parse validates
// the header completely before any data is read: offsets must cover the
// buffer exactly, with no overlap and no gap, and each tensor's byte length
// must match its dtype and shape. The header must be UTF-8; each entry and
// the "__metadata__" map are decoded strictly (internal/strictjson): a key
// given twice, or twice up to case, is refused rather than read as its last
// copy, so a file's metadata (such as fedtune.kind) has one reading. Every
// error names the file and the tensor.
//
// The canonical encoding (see DESIGN.md, "Weight digest") sorts tensor names
// bytewise, writes "__metadata__":{"format":"pt"} first (transformers'
// from_pretrained refuses a safetensors checkpoint without it) and then each
// entry as {"dtype":…,"shape":[…],"data_offsets":[b,e]}, with no whitespace,
// pads the header with spaces to a multiple of 8, and lays the data out in
// name order. The digest of a set of
// tensors is the SHA-256 of that encoding, so sha256sum of a canonically
// written file equals its digest, and (*File).Digest gives the same value for
// any file holding the same tensors, whatever its layout or metadata.
// Copy writes the canonical encoding of tensors read raw from elsewhere
// (one file, several shards) a piece at a time; it is how File.Digest,
// sharded checkpoints' digest and model import re-encode.
package safetensors
