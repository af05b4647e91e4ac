package trainer

import (
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/ledger"
)

// RegisterTx returns the ledger.DatasetRegistered body that records a
// signed manifest on the ledger: its digest, name, licence, source, sample
// count, Merkle root and byte count. The owner signs it; the ledger then
// knows the manifest by digest and can check proofs against its root on
// its own.
func RegisterTx(sm *datasets.SignedManifest) ledger.DatasetRegistered {
	return ledger.DatasetRegistered{Digest: sm.Digest, Name: sm.Name, Licence: sm.Licence, Source: sm.Source, Samples: sm.Samples,
		Root: sm.Root, Bytes: sm.Bytes}
}
