package fsm

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"

	"github.com/fedtune/fedtune/ledger"
)

// prefixPublishedName indexes published datasets by name:
// a/dn/<name> → the dataset's digest. A name is published once.
const prefixPublishedName = "a/dn/"

func publishedNameKey(name string) []byte { return []byte(prefixPublishedName + name) }

// checkPublished checks a DatasetPublished against the state: the signer
// is the manifest's owner and its signature verifies with the signer's
// key; the digest and the name are new.
func (c *execCtx) checkPublished(tx *ledger.Tx, b ledger.DatasetPublished) ([]kvWrite, error) {
	sm, err := b.Decode()
	if err != nil { // DecodeTx checked it; a tx built in memory may not have been
		return nil, txErr(ledger.CodeInvalid, "manifest: %v", err)
	}
	if sm.Owner != tx.Signer {
		return nil, txErr(ledger.CodeForbidden, "the manifest's owner is %s; %s may not publish it", sm.Owner, tx.Signer)
	}
	m, err := c.member(tx.Signer)
	if err != nil {
		return nil, err
	}
	pub, err := hex.DecodeString(m.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, &storageError{fmt.Errorf("member %s has a bad stored key", m.ID)}
	}
	if err := sm.VerifySignature(ed25519.PublicKey(pub)); err != nil {
		return nil, txErr(ledger.CodeBadSignature, "manifest signature does not verify with the key of %s: %v", tx.Signer, err)
	}
	var old ledger.Dataset
	if ok, err := c.getJSON(datasetKey(sm.Digest), &old); err != nil {
		return nil, err
	} else if ok {
		return nil, txErr(ledger.CodeAlreadyExists, "dataset %s is already recorded (%q by %s at height %d)", sm.Digest, old.Name, old.Owner, old.Height)
	}
	if d, ok, err := c.get(publishedNameKey(sm.Name)); err != nil {
		return nil, err
	} else if ok {
		return nil, txErr(ledger.CodeAlreadyExists, "a dataset named %q is already published (%s); publish under another name", sm.Name, d)
	}
	d := ledger.PublishedDataset(sm, tx.Signer, c.height, hex.EncodeToString(tx.Hash[:]))
	return []kvWrite{{datasetKey(sm.Digest), mustJSON(d)}, {publishedNameKey(sm.Name), []byte(sm.Digest)}}, nil
}

// checkContributionLicence refuses contributors[i] of a commit when its
// dataset's licence is not one the job's recipe accepts.
func (c *execCtx) checkContributionLicence(rc *ledger.RoundRecipe, i int, dataset string) error {
	if len(rc.Licences) == 0 {
		return nil
	}
	var d ledger.Dataset
	ok, err := c.getJSON(datasetKey(dataset), &d)
	if err != nil {
		return err
	}
	if !ok {
		return &storageError{fmt.Errorf("dataset %s of a submitted update is not recorded", dataset)}
	}
	if !rc.AcceptsLicence(d.Licence) {
		return txErr(ledger.CodeInvalid, "contributors[%d]: %s; reject the update (UpdateRejected) instead of counting it", i, rc.LicenceRefusal(d.Digest, d.Name, d.Licence))
	}
	return nil
}
