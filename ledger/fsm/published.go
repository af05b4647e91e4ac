package fsm

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/internal/codec"
)

// prefixPublishedName indexes published datasets by name:
// a/dn/<name> → the dataset's digest. A name is published once.
const prefixPublishedName = "a/dn/"

func publishedNameKey(name string) []byte { return []byte(prefixPublishedName + name) }

// prefixPublishedBlob indexes the blobs of published datasets (shards,
// leaves, card): a/db/<blob digest> → the dataset's digest, so that an
// artifact store can tell published data, which every member may read,
// from a member's pending upload.
const prefixPublishedBlob = "a/db/"

func publishedBlobKey(blob string) []byte { return []byte(prefixPublishedBlob + blob) }

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
	ws := []kvWrite{{datasetKey(sm.Digest), mustJSON(d)}, {publishedNameKey(sm.Name), []byte(sm.Digest)}}
	blobs := []string{sm.Leaves}
	if sm.Card != "" {
		blobs = append(blobs, sm.Card)
	}
	for _, sh := range sm.Shards {
		blobs = append(blobs, sh.Digest)
	}
	seen := map[string]bool{}
	for _, b := range blobs {
		if seen[b] {
			continue
		}
		seen[b] = true
		if _, ok, err := c.get(publishedBlobKey(b)); err != nil {
			return nil, err
		} else if !ok { // a blob two datasets share stays the first's
			ws = append(ws, kvWrite{publishedBlobKey(b), []byte(sm.Digest)})
		}
	}
	return ws, nil
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

// checkJobPublished checks the published datasets a job's recipe names:
// each is a published dataset with the sample count the recipe says, under
// a licence the recipe accepts.
func (c *execCtx) checkJobPublished(rc *ledger.RoundRecipe) error {
	for i, ref := range rc.Published {
		var d ledger.Dataset
		ok, err := c.getJSON(datasetKey(ref.Digest), &d)
		if err != nil {
			return err
		}
		switch {
		case !ok:
			return txErr(ledger.CodeNotFound, "recipe.published[%d] %s is not a recorded dataset", i, ref.Digest)
		case !d.Published:
			return txErr(ledger.CodeInvalid, "recipe.published[%d] %s (%q) is a trainer's private dataset, not published data", i, ref.Digest, d.Name)
		case d.Samples != ref.Samples:
			return txErr(ledger.CodeInvalid, "recipe.published[%d] %s says %d samples; the dataset has %d", i, ref.Digest, ref.Samples, d.Samples)
		case !rc.AcceptsLicence(d.Licence):
			return txErr(ledger.CodeInvalid, "recipe.published[%d]: %s", i, rc.LicenceRefusal(d.Digest, d.Name, d.Licence))
		}
	}
	return nil
}

// checkRoundRanges requires a RoundOpened's ranges to be exactly the ones
// the recipe gives its trainers.
func checkRoundRanges(rc *ledger.RoundRecipe, b *ledger.RoundOpened) error {
	want, err := rc.Ranges(b.Round, b.Trainers)
	if err != nil {
		return txErr(ledger.CodeInvalid, "round %d of job %q: %v", b.Round, b.JobID, err)
	}
	if len(want) != len(b.Ranges) {
		return txErr(ledger.CodeInvalid, "round %d of job %q gives %d sample ranges; the recipe's published data and seed give %d", b.Round, b.JobID, len(b.Ranges), len(want))
	}
	for i := range want {
		if want[i] != b.Ranges[i] {
			return txErr(ledger.CodeInvalid, "round %d of job %q: ranges[%d] is %s [%d, %d) of %s; the recipe's seed gives %s [%d, %d)",
				b.Round, b.JobID, i, b.Ranges[i].Trainer, b.Ranges[i].First, b.Ranges[i].End, b.Ranges[i].Dataset, want[i].Trainer, want[i].First, want[i].End)
		}
	}
	return nil
}

// checkUpdateData checks the data an UpdateSubmitted names: its ranges are
// exactly the ones the round gave the trainer; its dataset is the
// trainer's own registered one, or one of the job's published datasets;
// its samples are at most what that data holds.
func checkUpdateData(job *ledger.JobRecord, r *ledger.Round, trainer string, b *ledger.UpdateSubmitted, d *ledger.Dataset) error {
	want := ledger.RangesOf(r.Ranges, trainer)
	if len(b.Ranges) != len(want) {
		return txErr(ledger.CodeInvalid, "the update names %d sample ranges; round %d of job %q assigned trainer %s %d", len(b.Ranges), b.Round, b.JobID, trainer, len(want))
	}
	var ranged uint64
	for i := range want {
		if b.Ranges[i] != want[i] {
			return txErr(ledger.CodeInvalid, "ranges[%d] is [%d, %d) of %s; round %d of job %q assigned trainer %s [%d, %d) of %s",
				i, b.Ranges[i].First, b.Ranges[i].End, b.Ranges[i].Dataset, b.Round, b.JobID, trainer, want[i].First, want[i].End, want[i].Dataset)
		}
		ranged += want[i].Size()
	}
	if job != nil && job.Recipe.Verify != nil && !d.Published {
		// Any update of a spot-checked job may be drawn, so each must be
		// replayable by a verifier: trained on published data alone.
		return txErr(ledger.CodeInvalid, "job %q spot-checks its updates (verify), so an update must be trained on its published data alone and name that dataset; %s is the trainer's own dataset", b.JobID, d.Digest)
	}
	if d.Published {
		inJob := job != nil && slices.ContainsFunc(job.Recipe.Published, func(p ledger.PublishedRef) bool { return p.Digest == d.Digest })
		if !inJob {
			return txErr(ledger.CodeForbidden, "dataset %s is published data that job %q does not train on, and not the trainer's own", d.Digest, b.JobID)
		}
		if b.Samples > ranged {
			return txErr(ledger.CodeInvalid, "samples %d is more than the %d published samples round %d assigned trainer %s", b.Samples, ranged, b.Round, trainer)
		}
		return nil
	}
	if d.Owner != trainer {
		return txErr(ledger.CodeForbidden, "dataset %s was registered by %s, not by the submitting trainer %s", d.Digest, d.Owner, trainer)
	}
	if b.Samples > d.Samples+ranged {
		if ranged > 0 {
			return txErr(ledger.CodeInvalid, "samples %d is more than the %d samples dataset %s registered and the %d published samples assigned", b.Samples, d.Samples, d.Digest, ranged)
		}
		return txErr(ledger.CodeInvalid, "samples %d is more than the %d samples dataset %s registered", b.Samples, d.Samples, d.Digest)
	}
	return nil
}

// PublishedDatasets returns one page of the published datasets, by name:
// those named after after ("" from the first), at most limit of them, and
// no more once the page's records hold maxBytes of manifests (always at
// least one). It reads the name index, never the blocks.
func (f *FSM) PublishedDatasets(after string, limit, maxBytes int) (*ledger.PublishedPage, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("published datasets: limit %d: %w", limit, ledger.ErrRecordNotFound)
	}
	sn := f.st.Snapshot()
	if sn == nil {
		return nil, fmt.Errorf("ledger: published datasets: state closed")
	}
	defer sn.Close()
	var start []byte
	if after != "" {
		start = append(publishedNameKey(after), 0) // the first name after it
	}
	page := &ledger.PublishedPage{Datasets: []ledger.PublishedListing{}}
	size := 0
	err := sn.IterFrom([]byte(prefixPublishedName), start, func(k, v []byte) error {
		if len(page.Datasets) >= limit || (len(page.Datasets) > 0 && size >= maxBytes) {
			page.Next = page.Datasets[len(page.Datasets)-1].Name
			return errStop
		}
		digest := string(v)
		var d ledger.Dataset
		ok, err := getJSON(sn, datasetKey(digest), &d)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("ledger: published name %q indexes dataset %s, which is not recorded", k[len(prefixPublishedName):], digest)
		}
		if d.Attestations, err = attestationsOf(sn, digest); err != nil {
			return err
		}
		l := ledger.PublishedListing{Dataset: d}
		if h, err := hex.DecodeString(d.TxHash); err == nil && len(h) == 32 {
			raw, ok, err := sn.Get(txIndexKey([32]byte(h)))
			if err != nil {
				return err
			}
			if ok {
				r := codec.NewReader(raw)
				_, idx := r.U64(), r.U32()
				if r.Done() == nil {
					l.TxIndex = uint64(idx)
				}
			}
		}
		size += len(d.Manifest) + 256*len(d.Shards)
		page.Datasets = append(page.Datasets, l)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	return page, nil
}
