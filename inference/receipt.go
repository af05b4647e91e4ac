package inference

import (
	"context"
	"time"
)

// ReceiptHeader is the response header (a trailer of a streamed answer)
// that carries an answer's receipt, base64 (standard encoding) of its JSON.
const ReceiptHeader = "Fedtune-Receipt"

// ReceiptRequest is what a receipt is made over: one answered request.
type ReceiptRequest struct {
	ModelID     string    // the model's id as served
	ModelDigest string    // digest of the served weights
	RequestHash string    // SHA-256 (hex) of the request body as received
	Prompt      []int     // the prompt's token ids
	Tokens      []int     // the generated token ids
	Params      Params    // sampling parameters, the seed included
	Time        time.Time // when the answer was finished
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
