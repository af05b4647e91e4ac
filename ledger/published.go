package ledger

import (
	"fmt"

	"github.com/fedtune/fedtune/internal/dspub"
)

// TypeDatasetPublished is the type name of DatasetPublished.
const TypeDatasetPublished = "DatasetPublished"

// DatasetPublished (trainer) publishes a dataset for every member to read:
// Manifest is the signed publication manifest (internal/dspub), the
// canonical bytes of its DSSE envelope as a string. The signer must be the
// manifest's owner and its signature must verify with the signer's key;
// the dataset's digest is the SHA-256 of the envelope, and both the digest
// and the manifest's name must be new to the ledger. The ledger records it
// as a Dataset with Published set, so lineage, licences and jobs read it
// as they read a registered dataset.
type DatasetPublished struct {
	Manifest string `json:"manifest"`
}

// TxType implements TxBody.
func (DatasetPublished) TxType() string { return TypeDatasetPublished }

// Decode returns the manifest the tx carries, its form checked (not its
// signature: the signer's key is state).
func (b DatasetPublished) Decode() (*dspub.Signed, error) {
	return dspub.Decode([]byte(b.Manifest), nil)
}

func init() {
	TxRoles[TypeDatasetPublished] = RoleTrainer
	bodyDecoders[TypeDatasetPublished] = decodeBody[DatasetPublished]
}

// validatePublishedBody checks a DatasetPublished body without state.
func validatePublishedBody(b TxBody) (bool, error) {
	p, ok := b.(DatasetPublished)
	if !ok {
		return false, nil
	}
	if p.Manifest == "" {
		return true, fmt.Errorf("manifest is required")
	}
	if _, err := p.Decode(); err != nil {
		return true, fmt.Errorf("manifest: %w", err)
	}
	return true, nil
}

// PublishedDataset returns the Dataset record a DatasetPublished of m by
// signer at height records.
func PublishedDataset(m *dspub.Signed, signer string, height uint64, txHash string) Dataset {
	return Dataset{Digest: m.Digest, Name: m.Name, Licence: m.Licence, Samples: m.Samples, Root: m.Root, Bytes: m.Bytes,
		Owner: signer, Height: height, TxHash: txHash, Published: true, Format: m.Format, Card: m.Card, Leaves: m.Leaves,
		Shards: m.Shards, Manifest: string(m.Envelope)}
}
