package fsm

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/fedtune/fedtune/ledger"
)

// checkAttested validates a DatasetAttested against the state: the dataset
// is registered, and the statement it carries is signed by the tx's signer
// (an auditor, checked with its member key) and says what the tx says.
func (c *execCtx) checkAttested(tx *ledger.Tx, b ledger.DatasetAttested, txHash string) ([]kvWrite, error) {
	if ok, err := c.datasetKnown(b.Dataset); err != nil {
		return nil, err
	} else if !ok {
		return nil, txErr(ledger.CodeNotFound, "dataset %s is not a registered dataset; only a dataset on the ledger can be attested", b.Dataset)
	}
	m, err := c.member(tx.Signer)
	if err != nil {
		return nil, err
	}
	pub, err := hex.DecodeString(m.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, &storageError{fmt.Errorf("member %s has a bad stored key", m.ID)}
	}
	s, err := ledger.VerifyStatement(b.Statement, ed25519.PublicKey(pub))
	if err != nil {
		return nil, txErr(ledger.CodeBadSignature, "statement of the attestation of dataset %s: %v; an auditor signs its own statement with its member key", b.Dataset, err)
	}
	if why := b.Matches(s); why != "" {
		return nil, txErr(ledger.CodeInvalid, "attestation of dataset %s: %s", b.Dataset, why)
	}
	p := b.Predicate
	a := ledger.DatasetAttestation{Dataset: b.Dataset, Kind: p.Kind, Auditor: tx.Signer, Result: p.Result, Tool: p.Tool,
		Report: p.Report, Height: c.height, TxHash: txHash}
	return []kvWrite{{attestKey(b.Dataset, p.Kind, tx.Signer), mustJSON(a)}}, nil
}

// datasetKnown reports whether digest is a dataset on the ledger: today a
// DatasetRegistered manifest; a published dataset (DatasetPublished, when
// it lands) must count here too.
func (c *execCtx) datasetKnown(digest string) (bool, error) {
	_, ok, err := c.get(datasetKey(digest))
	return ok, err
}

// attestations returns a dataset's attestations as the block so far sees
// them, ordered by kind then auditor.
func (c *execCtx) attestations(dataset string) ([]ledger.DatasetAttestation, error) {
	var out []ledger.DatasetAttestation
	err := c.b.Iter(attestPrefix(dataset), func(_, v []byte) error {
		var a ledger.DatasetAttestation
		if err := json.Unmarshal(v, &a); err != nil {
			return &storageError{err}
		}
		out = append(out, a)
		return nil
	})
	if err != nil {
		return nil, asStorage(err)
	}
	return out, nil
}

// missingAttestations returns the requirements dataset does not meet.
func (c *execCtx) missingAttestations(reqs []ledger.AttestationRequirement, dataset string) ([]ledger.AttestationRequirement, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	have, err := c.attestations(dataset)
	if err != nil {
		return nil, err
	}
	return ledger.MissingAttestations(reqs, have), nil
}

func describeRequirements(reqs []ledger.AttestationRequirement) string {
	s := make([]string, len(reqs))
	for i, r := range reqs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

// attestationsOf reads a dataset's attestations from a state snapshot.
func attestationsOf(st segmentReader, dataset string) ([]ledger.DatasetAttestation, error) {
	var out []ledger.DatasetAttestation
	err := st.Iter(attestPrefix(dataset), func(_, v []byte) error {
		var a ledger.DatasetAttestation
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		out = append(out, a)
		return nil
	})
	return out, err
}
