package audit

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
)

// ErrUntrustedManifest is wrapped by TrustedManifest when a manifest does
// not belong to the ledger's dataset record.
var ErrUntrustedManifest = errors.New("audit: manifest does not match the ledger")

// TrustedManifest ties a manifest file to the ledger: its SHA-256 must be
// the registered dataset's digest, it must be signed by the registering
// trainer (owner, the member record of ds.Owner), and its name, licence,
// source, sample count, Merkle root and byte count must be those the ledger
// recorded. The returned
// manifest's root and sample count are then what proofs are checked
// against.
func TrustedManifest(ds *ledger.Dataset, owner *ledger.Member, manifest []byte) (*datasets.SignedManifest, error) {
	if sum := digest.Bytes(manifest); sum != ds.Digest {
		return nil, fmt.Errorf("%w: the manifest hashes to %s, the ledger registered %s", ErrUntrustedManifest, sum, ds.Digest)
	}
	if owner == nil || owner.ID != ds.Owner {
		return nil, fmt.Errorf("%w: no member record for the dataset's owner %s", ErrUntrustedManifest, ds.Owner)
	}
	pub, err := hex.DecodeString(owner.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: owner %s has a malformed public key", ErrUntrustedManifest, owner.ID)
	}
	sm, err := datasets.DecodeManifest(manifest, ed25519.PublicKey(pub))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUntrustedManifest, err)
	}
	switch {
	case sm.Owner != ds.Owner:
		return nil, fmt.Errorf("%w: manifest owner %s, the ledger's %s", ErrUntrustedManifest, sm.Owner, ds.Owner)
	case ds.Root != "" && (sm.Root != ds.Root || sm.Bytes != ds.Bytes):
		return nil, fmt.Errorf("%w: root: manifest %s over %d bytes, ledger %s over %d bytes", ErrUntrustedManifest, sm.Root, sm.Bytes, ds.Root, ds.Bytes)
	case sm.Samples != ds.Samples:
		return nil, fmt.Errorf("%w: samples: manifest %d, ledger %d", ErrUntrustedManifest, sm.Samples, ds.Samples)
	case sm.Licence != ds.Licence:
		return nil, fmt.Errorf("%w: licence: manifest %q, ledger %q", ErrUntrustedManifest, sm.Licence, ds.Licence)
	case sm.Name != ds.Name || sm.Source != ds.Source:
		return nil, fmt.Errorf("%w: name/source: manifest %q/%q, ledger %q/%q", ErrUntrustedManifest, sm.Name, sm.Source, ds.Name, ds.Source)
	}
	return sm, nil
}

// ErrNoLedgerRoot is wrapped when a dataset record carries no Merkle root
// (and no manifest was given to learn it from).
var ErrNoLedgerRoot = errors.New("audit: the ledger records no Merkle root for the dataset")

// LedgerRoot returns the Merkle root the ledger recorded for ds.
func LedgerRoot(ds *ledger.Dataset) ([32]byte, error) {
	var root [32]byte
	b, err := hex.DecodeString(ds.Root)
	if err != nil || len(b) != 32 {
		return root, fmt.Errorf("%w: dataset %s has root %q", ErrNoLedgerRoot, ds.Digest, ds.Root)
	}
	copy(root[:], b)
	return root, nil
}

// CheckProofAgainstLedger verifies a dataset proof against the root of the
// registered dataset ds. When manifest is nil and the proof embeds none,
// the root and sample count come from the ledger record alone (and the
// returned manifest is nil); otherwise the manifest (the given one, or the
// proof's embedded one) must be TrustedManifest's, and the proof must hold
// for its root and sample count.
func CheckProofAgainstLedger(p *datasets.Proof, ds *ledger.Dataset, owner *ledger.Member, manifest []byte) (*datasets.SignedManifest, error) {
	if manifest == nil && p.Manifest == "" && ds.Root != "" {
		root, err := LedgerRoot(ds)
		if err != nil {
			return nil, err
		}
		return nil, p.Verify(root, ds.Samples)
	}
	if manifest == nil {
		if p.Manifest == "" {
			return nil, fmt.Errorf("audit: the proof carries no manifest and none was given (prove with --manifest, or pass one)")
		}
		manifest = []byte(p.Manifest)
	}
	sm, err := TrustedManifest(ds, owner, manifest)
	if err != nil {
		return nil, err
	}
	if err := p.Verify(sm.RootBytes(), sm.Samples); err != nil {
		return sm, err
	}
	return sm, nil
}
