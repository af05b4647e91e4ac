package inference

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/internal/atomicfile"
)

// ReceiptHeader is the response header (a trailer of a streamed answer)
// that carries an answer's receipt, base64 (standard encoding) of its JSON.
const ReceiptHeader = "Fedtune-Receipt"

// ReceiptRequest is what a receipt is made over: one answered request.
type ReceiptRequest struct {
	ModelID       string         // the model's id as served
	ModelDigest   string         // weight digest of the model
	AdapterDigest string         // weight digest of the adapter merged in; "" for none
	Block         *receipt.Block // the block that committed the weights; nil standalone
	Request       []byte         // the request body as received
	Prompt        []int          // the prompt's token ids
	Tokens        []int          // the generated token ids (no stop token)
	Params        Params         // sampling parameters, the seed included
	Stop          []string       // the request's stop sequences
	Response      string         // the answer's text
	Time          time.Time      // when the answer was finished (UTC)
}

// Receipter gives an answer its receipt. Implementations are safe for
// concurrent use.
type Receipter interface {
	// Receipt returns the receipt of r as a JSON value, or nil for none.
	Receipt(ctx context.Context, r ReceiptRequest) ([]byte, error)
}

// NoReceipts is the Receipter that gives no receipt.
type NoReceipts struct{}

// Receipt implements Receipter.
func (NoReceipts) Receipt(context.Context, ReceiptRequest) ([]byte, error) { return nil, nil }

// Signer is the Receipter that signs receipts (package receipt's DSSE
// envelope) with the node's ledger key. When Dir is set it also writes each
// answer's bundle (receipt.Bundle: the envelope, the request, the prompt
// and completion ids and the response text), atomically, as
// Dir/<request-hash>.json, so that the answer can be audited and replayed.
type Signer struct {
	Key ed25519.PrivateKey
	Dir string
}

// Receipt implements Receipter: the signed envelope.
func (s Signer) Receipt(_ context.Context, r ReceiptRequest) ([]byte, error) {
	env, b, err := receipt.SignAnswer(s.Key, receipt.Answer{
		Model: r.ModelDigest, Adapter: r.AdapterDigest, Block: r.Block, Request: r.Request,
		PromptIDs: r.Prompt, CompletionIDs: r.Tokens, Time: r.Time,
		Sampling: receipt.Sampling{Temperature: r.Params.Temperature, TopP: r.Params.TopP, MaxTokens: r.Params.MaxTokens,
			Stop: r.Stop, StopTokenIDs: r.Params.StopTokens, Seed: r.Params.Seed},
	}, r.Response)
	if err != nil || s.Dir == "" {
		return env, err
	}
	data, err := b.Encode()
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(BundlePath(s.Dir, r.Request), data, 0o644); err != nil {
		return nil, fmt.Errorf("inference: receipt bundle: %w", err)
	}
	return env, nil
}

// BundlePath is where Signer with Dir dir writes the bundle of the answer
// to request body req: dir/<request-hash>.json.
func BundlePath(dir string, req []byte) string {
	return filepath.Join(dir, receipt.RequestHash(req)+".json")
}
