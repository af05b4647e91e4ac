// Package receipt owns the signed receipt an inference node attaches to
// each answer, and the bundle that carries a receipt with what is needed
// to replay the answer.
//
// A receipt (Receipt) says which model produced which tokens for which
// request: the model's weight digest (and the adapter's, when one was
// applied), the tokenizer digest of the folder whose tokenizer and chat
// template made the prompt ids (model.TokenizerDigest), the height and hash of the ledger block that committed the
// served weights (the adapter's commit when one is applied; absent when the
// node serves standalone), the SHA-256 of the request
// body the server received (RequestHash), the hashes of the prompt and
// generated token ids (TokensHash: SHA-256 of the ids as little-endian
// uint32s), the sampling parameters and seed, the signer's key, and the
// time. It travels as a DSSE envelope (internal/dsse) with payload type
// PayloadType, signed by the node's ledger key:
//
//	env, bundle, err := receipt.SignAnswer(key, receipt.Answer{...}, text)
//	env, err := receipt.Sign(key, r)      // canonical envelope JSON
//	r, err := receipt.Verify(env)         // signature, type, every field
//
// A server fills an Answer (digests, block, request body or its hash,
// prompt and generated ids, sampling parameters with the seed it used) and
// calls SignAnswer, or New then Sign.
//
// Verify checks that the envelope is signed by the key the receipt names;
// whether that key belongs to an active ledger member with the inference
// role, and whether the model and block are the chain's, is for the caller
// to check against a ledger (fedtune audit receipt does). Its errors wrap
// ErrBadSignature, ErrPayloadType or ErrMalformed; a malformed field is
// named by its JSON name.
//
// The payload has one byte form: Encode writes the fields in a fixed order
// with encoding/json, and Verify decodes with internal/strictjson (unknown
// fields and duplicate names refused) and refuses any payload that does not
// re-encode to the same bytes.
//
// A Bundle is a receipt file for audit: the envelope, the request body,
// the prompt token ids and, optionally, the generated ids and the response
// text. Bundle.Check verifies the envelope and that the request and ids
// hash to what the receipt signed, so a replay can start from them.
package receipt
