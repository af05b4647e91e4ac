package engine

import (
	"context"
	"errors"

	"github.com/fedtune/fedtune/model"
)

// EvaluateMasked is model.EvaluateMasked on the engine's forward pass on
// dev: the mean negative log-likelihood of the targets masks select (the
// assistant tokens of instruction data), each document run on its own.
func EvaluateMasked(ctx context.Context, dev Device, m *model.Model, docs [][]int, masks [][]uint8, progress func(done, total int)) (model.EvalResult, error) {
	r, err := NewRunner(dev, m)
	if err != nil {
		return model.EvalResult{}, err
	}
	res, err := model.EvaluateMasked(ctx, &m.Config, r, docs, masks, progress)
	return res, errors.Join(err, r.Close())
}
