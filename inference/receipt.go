package inference

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/digest"
)

// ReceiptHeader is the response header (a trailer of a streamed answer)
// that carries an answer's receipt, base64 (standard encoding) of its JSON.
const ReceiptHeader = "Fedtune-Receipt"

// ReceiptRequest is what a receipt is made over: one answered request.
type ReceiptRequest struct {
	ModelID       string // the model's id as served
	ModelDigest   string // weight digest of the model
	AdapterDigest string // weight digest of the adapter merged in; "" for none
	// TokenizerDigest is the tokenizer digest (model.TokenizerDigest) of
	// the folder whose tokenizer and chat template made Prompt; "" for none.
	TokenizerDigest string
	Block           *receipt.Block // the block that committed the weights; nil standalone
	Request         []byte         // the request body as received
	Prompt          []int          // the prompt's token ids
	Tokens          []int          // the generated token ids (no stop token)
	Params          Params         // sampling parameters, the seed included
	Stop            []string       // the request's stop sequences
	Response        string         // the answer's text
	TimeCut         bool           // the request's time limit ended the answer
	Time            time.Time      // when the answer was finished (UTC)
}

// Receipter gives an answer its receipt. Implementations are safe for
// concurrent use.
type Receipter interface {
	// Receipt returns the receipt of r as a JSON value, or nil for none.
	// A receipt returned with an error still goes with the answer (the
	// error, such as a bundle that could not be saved, is logged).
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
// Dir/<request-hash>.json, so that the answer can be audited and replayed;
// a later answer to the same body goes to
// Dir/<request-hash>-<envelope-hash>.json, never over it.
type Signer struct {
	Key ed25519.PrivateKey
	Dir string
}

// Receipt implements Receipter: the signed envelope.
func (s Signer) Receipt(_ context.Context, r ReceiptRequest) ([]byte, error) {
	cut := ""
	if r.TimeCut {
		cut = receipt.CutTime
	}
	env, b, err := receipt.SignAnswer(s.Key, receipt.Answer{
		Model: r.ModelDigest, Adapter: r.AdapterDigest, Tokenizer: r.TokenizerDigest, Block: r.Block, Request: r.Request,
		PromptIDs: r.Prompt, CompletionIDs: r.Tokens, Time: r.Time, Cut: cut,
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
	if err := writeBundle(s.Dir, r.Request, env, data); err != nil {
		// The answer keeps its receipt; only the node's copy is missing.
		return env, fmt.Errorf("inference: receipt bundle: %w", err)
	}
	return env, nil
}

// bundleMu serialises the choice of a bundle's file name.
var bundleMu sync.Mutex

// writeBundle writes the bundle data of an answer to request req as
// BundlePath, or, when an earlier answer to the same body has that file
// (anyone can send a body again), beside it as
// dir/<request-hash>-<first 16 hex of the envelope's SHA-256>.json: an
// answer's bundle is never replaced by another's.
func writeBundle(dir string, req, env, data []byte) error {
	bundleMu.Lock()
	defer bundleMu.Unlock()
	p := BundlePath(dir, req)
	if _, err := os.Lstat(p); err == nil {
		p = strings.TrimSuffix(p, ".json") + "-" + digest.Bytes(env)[:16] + ".json"
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return atomicfile.Write(p, data, 0o644)
}

// BundlePath is where Signer with Dir dir writes the bundle of the answer
// to request body req: dir/<request-hash>.json (the first answer to that
// body; later ones go beside it, see Signer).
func BundlePath(dir string, req []byte) string {
	return filepath.Join(dir, receipt.RequestHash(req)+".json")
}
