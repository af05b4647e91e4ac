package client

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/ledger"
)

// Query reads a record of ledger state as JSON.
func (c *Client) Query(ctx context.Context, kind ledgerv1.QueryKind, key string, round uint64) ([]byte, error) {
	return c.QueryAt(ctx, kind, key, round, 0)
}

// QueryAt is Query read at least at height minHeight (0: the node's
// latest): the node waits until it has applied that height, bounded by ctx
// and the node's node.MaxQueryWait, and answers Unavailable if it does not
// get there.
func (c *Client) QueryAt(ctx context.Context, kind ledgerv1.QueryKind, key string, round, minHeight uint64) ([]byte, error) {
	resp, err := c.api.Query(ctx, &ledgerv1.QueryRequest{Kind: kind, Key: key, Round: round, MinHeight: minHeight})
	if err != nil {
		return nil, c.typed(err)
	}
	return resp.Json, nil
}

// queryJSON reads one ledger record into v, at least at height minHeight
// (0: the node's latest); an error wrapping ledger.ErrRecordNotFound when
// the ledger has none.
func (c *Client) queryJSON(ctx context.Context, kind ledgerv1.QueryKind, key string, round, minHeight uint64, v any) error {
	js, err := c.QueryAt(ctx, kind, key, round, minHeight)
	if status.Code(err) == codes.NotFound {
		return fmt.Errorf("%s %s: %w", kind, abbrev(key), ledger.ErrRecordNotFound)
	}
	if err != nil {
		return fmt.Errorf("query %s %s: %w", kind, abbrev(key), err)
	}
	if err := json.Unmarshal(js, v); err != nil {
		return fmt.Errorf("query %s %s: %w", kind, abbrev(key), err)
	}
	return nil
}

// Nonce returns the last nonce the ledger applied for signer id (0 for
// none).
func (c *Client) Nonce(ctx context.Context, id string) (uint64, error) {
	js, err := c.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_NONCE, id, 0)
	if err != nil {
		return 0, fmt.Errorf("nonce of %s: %w", abbrev(id), err)
	}
	var n uint64
	if err := json.Unmarshal(js, &n); err != nil {
		return 0, fmt.Errorf("nonce of %s: %w", abbrev(id), err)
	}
	return n, nil
}

// Member returns the ledger's record of member id.
func (c *Client) Member(ctx context.Context, id string) (*ledger.Member, error) {
	var m ledger.Member
	if err := c.queryJSON(ctx, ledgerv1.QueryKind_QUERY_KIND_MEMBER, id, 0, 0, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Dataset returns the ledger's record of dataset digest.
func (c *Client) Dataset(ctx context.Context, digest string) (*ledger.Dataset, error) {
	var d ledger.Dataset
	if err := c.queryJSON(ctx, ledgerv1.QueryKind_QUERY_KIND_DATASET, digest, 0, 0, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Model returns the ledger's record of model digest.
func (c *Client) Model(ctx context.Context, digest string) (*ledger.Model, error) {
	var m ledger.Model
	if err := c.queryJSON(ctx, ledgerv1.QueryKind_QUERY_KIND_MODEL, digest, 0, 0, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Job returns a registered job: its owner and round recipe (whose
// Aggregators are the job's designated aggregators).
func (c *Client) Job(ctx context.Context, job string) (*ledger.JobRecord, error) {
	var j ledger.JobRecord
	if err := c.queryJSON(ctx, ledgerv1.QueryKind_QUERY_KIND_JOB, job, 0, 0, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// Suspensions returns the trainers a verifier's rejection suspended from
// job, each with the last round it may not take part in, read at least at
// height minHeight (0: the node's latest). A coordinator reads them before
// it opens a round: the ledger refuses a RoundOpened that selects one.
func (c *Client) Suspensions(ctx context.Context, job string, minHeight uint64) ([]ledger.Suspension, error) {
	var ss []ledger.Suspension
	if err := c.queryJSON(ctx, ledgerv1.QueryKind_QUERY_KIND_SUSPENSIONS, job, 0, minHeight, &ss); err != nil {
		return nil, fmt.Errorf("suspensions of job %q: %w", job, err)
	}
	return ss, nil
}

// Round returns round n of job as the ledger records it, with its updates.
func (c *Client) Round(ctx context.Context, job string, n uint64) (*ledger.Round, error) {
	return c.RoundAt(ctx, job, n, 0)
}

// RoundAt is Round read at least at height minHeight (QueryAt): a caller
// that knows the height a tx of the round committed at reads a round that
// holds it.
func (c *Client) RoundAt(ctx context.Context, job string, n, minHeight uint64) (*ledger.Round, error) {
	var r ledger.Round
	if err := c.queryJSON(ctx, ledgerv1.QueryKind_QUERY_KIND_ROUND, job, n, minHeight, &r); err != nil {
		return nil, fmt.Errorf("round %d at height ≥ %d: %w", n, minHeight, err)
	}
	return &r, nil
}

// StepDigests returns the step digests update u of round round of job
// discloses (nil when none), which a round's read leaves out: it fetches
// the update's UpdateSubmitted tx (Tx, inclusion-proved) and checks it is
// u's (ledger.UpdateStepDigests). The caller checks that they hash to
// u's step root (ledger.StepDigestsRoot).
func (c *Client) StepDigests(ctx context.Context, job string, round uint64, u *ledger.Update) ([]string, error) {
	var h [32]byte
	if b, err := hex.DecodeString(u.TxHash); err != nil || len(b) != len(h) {
		return nil, fmt.Errorf("step digests of update %s: tx hash %q is not 64 hex characters", abbrev(u.UpdateDigest), abbrev(u.TxHash))
	} else {
		copy(h[:], b)
	}
	resp, err := c.Tx(ctx, h)
	if err != nil {
		return nil, fmt.Errorf("step digests of update %s: %w", abbrev(u.UpdateDigest), err)
	}
	return ledger.UpdateStepDigests(resp.Envelope, job, round, u)
}

// Lineage returns the lineage of model digest as the ledger records it
// (DecodeLineage).
func (c *Client) Lineage(ctx context.Context, digest string) (*ledger.Lineage, error) {
	js, err := c.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_LINEAGE, digest, 0)
	if status.Code(err) == codes.NotFound {
		return nil, fmt.Errorf("lineage of %s: %w: %w", abbrev(digest), ledger.ErrRecordNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("lineage of %s: %w", abbrev(digest), err)
	}
	return DecodeLineage(js)
}

// DecodeLineage decodes the JSON of a ledger node's lineage query
// (ledger.Lineage marshalled with encoding/json), which must name its
// model.
func DecodeLineage(data []byte) (*ledger.Lineage, error) {
	var l ledger.Lineage
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("lineage JSON: %w", err)
	}
	if l.Model.Digest == "" {
		return nil, errors.New("lineage JSON has no model digest")
	}
	return &l, nil
}

// Rounds returns the job's rounds 1, 2, … up to the first the ledger does
// not have.
func (c *Client) Rounds(ctx context.Context, job string) ([]ledger.Round, error) {
	var out []ledger.Round
	for n := uint64(1); ; n++ {
		r, err := c.Round(ctx, job, n)
		if errors.Is(err, ledger.ErrRecordNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *r)
	}
}

// UpdatesByDigest returns every submission of update digest on the
// ledger, earliest first (an error wrapping ledger.ErrRecordNotFound when
// none).
func (c *Client) UpdatesByDigest(ctx context.Context, digest string) ([]ledger.UpdateSubmission, error) {
	var subs []ledger.UpdateSubmission
	if err := c.queryJSON(ctx, ledgerv1.QueryKind_QUERY_KIND_UPDATES_BY_DIGEST, digest, 0, 0, &subs); err != nil {
		return nil, err
	}
	if len(subs) == 0 {
		return nil, fmt.Errorf("update %s: %w", digest, ledger.ErrRecordNotFound)
	}
	return subs, nil
}

// abbrev shortens a key ID or digest for messages.
func abbrev(id string) string {
	if len(id) > 16 {
		return id[:16] + "…"
	}
	return id
}

// PublishedPage reads one page of the published datasets, by name: those
// named after after ("" for the first page), at most limit (0: the node's
// default).
func (c *Client) PublishedPage(ctx context.Context, after string, limit int) (*ledger.PublishedPage, error) {
	resp, err := c.api.Query(ctx, &ledgerv1.QueryRequest{Kind: ledgerv1.QueryKind_QUERY_KIND_PUBLISHED_DATASETS, After: after, Limit: uint32(max(limit, 0))})
	if err != nil {
		return nil, fmt.Errorf("published datasets after %q: %w", after, c.typed(err))
	}
	var p ledger.PublishedPage
	if err := json.Unmarshal(resp.Json, &p); err != nil {
		return nil, fmt.Errorf("published datasets after %q: %w", after, err)
	}
	return &p, nil
}

// PublishedDatasets reads every page of the published datasets and returns
// them in the order they were published (height, then position in the
// block). A node whose pages do not advance by name, or list a name twice,
// is refused.
func (c *Client) PublishedDatasets(ctx context.Context) ([]ledger.PublishedListing, error) {
	var all []ledger.PublishedListing
	after := ""
	for {
		p, err := c.PublishedPage(ctx, after, 0)
		if err != nil {
			return nil, err
		}
		for _, d := range p.Datasets {
			if len(all) > 0 && d.Name <= after {
				return nil, fmt.Errorf("published datasets: the node listed %q after %q: names must increase", d.Name, after)
			}
			after = d.Name
			all = append(all, d)
		}
		if p.Next == "" {
			break
		}
		if len(p.Datasets) == 0 || p.Next != after {
			return nil, fmt.Errorf("published datasets: the node's page ends at %q but says the next page starts after %q", after, p.Next)
		}
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].Height != all[j].Height {
			return all[i].Height < all[j].Height
		}
		return all[i].TxIndex < all[j].TxIndex
	})
	return all, nil
}
