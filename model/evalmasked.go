package model

import (
	"context"
	"fmt"
	"math"
)

// EvaluateMasked scores documents with forward pass f of a model with
// config c on the targets their masks select: token k+1 of a document
// counts, predicted from its tokens 0..k, when masks[i][k+1] is 1 (an
// assistant token of instruction data). Every document runs on its own,
// so none sees another, as in a packed window with document segments; a
// document longer than max_position_embeddings is cut into windows as
// Evaluate cuts a stream. The result is the mean NLL over the counted
// targets; Tokens is their number. progress, if set, is called after each
// document with the documents done.
func EvaluateMasked(ctx context.Context, c *Config, f Forwarder, docs [][]int, masks [][]uint8, progress func(done, total int)) (EvalResult, error) {
	if len(docs) != len(masks) {
		return EvalResult{}, fmt.Errorf("model: evaluate: %d documents, %d masks", len(docs), len(masks))
	}
	L := c.MaxPositionEmbeddings
	V := c.VocabSize
	var sum float64
	var count int
	for i, doc := range docs {
		if len(masks[i]) != len(doc) {
			return EvalResult{}, fmt.Errorf("model: evaluate: document %d has %d tokens, %d mask entries", i, len(doc), len(masks[i]))
		}
		for s := 0; s+1 < len(doc); s += L {
			if err := ctx.Err(); err != nil {
				return EvalResult{}, err
			}
			e := min(s+L, len(doc))
			counted := false
			for k := s + 1; k < e; k++ {
				counted = counted || masks[i][k] == 1
			}
			if !counted {
				continue
			}
			logits, err := f.Logits(doc[s : e-1])
			if err != nil {
				return EvalResult{}, err
			}
			for k := s + 1; k < e; k++ {
				if masks[i][k] == 1 {
					sum -= logSoftmaxAt(logits[(k-s-1)*V:(k-s)*V], doc[k])
					count++
				}
			}
		}
		if progress != nil {
			progress(i+1, len(docs))
		}
	}
	if count == 0 {
		return EvalResult{}, fmt.Errorf("model: evaluate: no masked targets to score")
	}
	mean := sum / float64(count)
	return EvalResult{Tokens: count, MeanNLL: mean, Perplexity: math.Exp(mean)}, nil
}
