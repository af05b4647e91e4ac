package audit

import (
	"context"
	"testing"
)

// BenchmarkVerify re-derives the two-round test chain (7 blocks, 13 txs),
// with and without re-running the aggregations from the artifacts.
func BenchmarkVerify(b *testing.B) {
	c := newTestChain(b)
	e := c.export(b)
	for _, bc := range []struct {
		name string
		opts VerifyOptions
	}{{"chain", VerifyOptions{}}, {"chain+artifacts", VerifyOptions{Artifacts: c.artifacts}}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := Verify(context.Background(), e, bc.opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
