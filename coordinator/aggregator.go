package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedtune/fedtune/aggregator"
	aggregatorv1 "github.com/fedtune/fedtune/api/aggregator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/internal/strictjson"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/kernels"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// Aggregator is the aggregator role as the Service sees it: it runs a
// round's aggregation and signs and submits the aggregator-role
// transactions (UpdateRejected, RoundCommitted, RoundFailed). The
// in-process implementation is NewLocalAggregator; RemoteAggregator calls a
// standalone aggregator process (fedtune aggregator start).
type Aggregator interface {
	// ID returns the aggregator's ledger key ID.
	ID() string
	// Aggregate combines the task's inputs over the reference weights
	// global ("" for none) and returns the result, whose model (and state)
	// are in the coordinator's artifact store when it returns.
	Aggregate(ctx context.Context, a AggregationTask, global string) (AggregationDone, error)
	// Submit signs body with the aggregator key and waits for the ledger,
	// like (*client.Signer).Submit: a rejection wraps client.ErrRejected.
	Submit(ctx context.Context, body ledger.TxBody) (uint64, error)
}

// LocalAggregator aggregates over an artifact store in this process and
// signs with its own Signer.
type LocalAggregator struct {
	// Backend computes the numerics (nil: kernels.Default(), the CPU).
	// Every backend gives the same bits, so the choice never changes a
	// committed digest.
	Backend kernels.Backend

	// Fetch brings blob digest into the store (nil: the blob must be in
	// the store already, as in the coordinator's own process). An update
	// that Fetch cannot bring after FetchAttempts tries is rejected.
	Fetch func(ctx context.Context, digest string) error

	store  *artifact.Store
	dir    string
	signer *client.Signer
	log    *slog.Logger
	own    OwnRounds
}

// NewLocalAggregator returns an aggregator over store that keeps scratch
// files under dir and signs through signer (log may be nil).
func NewLocalAggregator(store *artifact.Store, dir string, signer *client.Signer, log *slog.Logger) *LocalAggregator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &LocalAggregator{store: store, dir: dir, signer: signer, log: log}
}

// ID implements Aggregator.
func (l *LocalAggregator) ID() string { return l.signer.ID() }

// Submit implements Aggregator. It signs only what this aggregator derived
// itself (OwnRounds.Vet): an UpdateRejected of an update its aggregation
// rejected or could not fetch, a RoundFailed of a round whose aggregation
// failed here or whose deadline the ledger shows passed with too few
// usable updates, and a RoundCommitted of the model and contributors its
// aggregation produced. Anything else is refused with an error wrapping
// client.ErrRejected and ErrNotOwn.
func (l *LocalAggregator) Submit(ctx context.Context, body ledger.TxBody) (uint64, error) {
	own, err := l.own.Vet(ctx, l.signer.Client(), body, l.fetch)
	if err == nil {
		if rc, ok := body.(ledger.RoundCommitted); ok {
			err = l.own.vetCommit(rc)
		}
	}
	if err != nil {
		return 0, refusal{fmt.Errorf("%s: aggregator %s refuses to sign: %w", body.TxType(), abbrev(l.ID()), err)}
	}
	return l.signer.Submit(ctx, own)
}

// refusal is an aggregator's refusal to sign: a rejection (client.ErrRejected)
// that no ledger node made.
type refusal struct{ err error }

func (r refusal) Error() string   { return r.err.Error() }
func (r refusal) Unwrap() []error { return []error{r.err, client.ErrRejected} }

// fetch brings digest into the store (Fetch), or checks it is there.
func (l *LocalAggregator) fetch(ctx context.Context, digest string) error {
	if l.Fetch != nil {
		return l.Fetch(ctx, digest)
	}
	ok, err := l.store.Has(digest)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("blob %s is not in the store", digest)
	}
	return nil
}

// Aggregate implements Aggregator: it fetches the inputs, the reference
// global and the server state, runs aggregator.Aggregate over the stored
// updates and stores the new global (and server state). It rejects
// itself, and returns in Rejected (keyed by trainer) every update of the
// round on the ledger that is not an input, not rejected and not in the
// artifact store after FetchAttempts tries; it records its own
// rejections and failures for Submit.
func (l *LocalAggregator) Aggregate(ctx context.Context, a AggregationTask, global string) (AggregationDone, error) {
	done, err := l.aggregate(ctx, &a, global)
	if err != nil && ctx.Err() == nil && !errors.Is(err, ErrAggregationRefused) {
		l.own.Fail(a.JobID, a.Round, err.Error())
	}
	return done, err
}

// ErrAggregationRefused is wrapped when an aggregator refuses a request
// (such as one that leaves out a delivered update of the round): no
// failure of the aggregation, so Submit signs no RoundFailed for it.
var ErrAggregationRefused = errors.New("aggregation refused")

func (l *LocalAggregator) aggregate(ctx context.Context, a *AggregationTask, global string) (AggregationDone, error) {
	rejected := map[string]string{}
	// Inputs this aggregator cannot fetch are rejected, not fatal: the
	// ledger records them as submitted, and only their trainer can be to
	// blame.
	kept := a.Inputs[:0:0]
	for _, in := range a.Inputs {
		if err := FetchWithRetry(ctx, in.Digest, l.fetch); err != nil {
			if ctx.Err() != nil {
				return AggregationDone{}, ctx.Err()
			}
			why := fmt.Sprintf("update %s of trainer %s is %v", in.Digest, in.Trainer, err)
			l.own.Reject(a.JobID, a.Round, in.Digest, why)
			rejected[in.Trainer] = truncateReason(why)
			continue
		}
		kept = append(kept, in)
	}
	a.Inputs = kept
	minTrainers := 0
	if lc := l.signer.Client(); lc != nil {
		if rec, err := lc.Job(ctx, a.JobID); err == nil {
			minTrainers = rec.Recipe.MinTrainers
		}
		others, err := undelivered(ctx, lc, *a)
		if err != nil {
			return AggregationDone{}, err
		}
		for _, u := range others {
			if _, ok := rejected[u.Trainer]; ok {
				continue
			}
			err := FetchWithRetry(ctx, u.UpdateDigest, l.fetch)
			if err == nil {
				return AggregationDone{}, fmt.Errorf("%w: update %s of trainer %s is submitted on the ledger, not rejected and in the artifact store, yet not an input of the aggregation of job %s round %d",
					ErrAggregationRefused, u.UpdateDigest, u.Trainer, a.JobID, a.Round)
			}
			if ctx.Err() != nil {
				return AggregationDone{}, ctx.Err()
			}
			why := fmt.Sprintf("update %s of trainer %s was submitted on the ledger but is %v", u.UpdateDigest, u.Trainer, err)
			l.own.Reject(a.JobID, a.Round, u.UpdateDigest, why)
			rejected[u.Trainer] = truncateReason(why)
		}
	}
	for _, d := range []string{global, a.State} {
		if d == "" {
			continue
		}
		if err := FetchWithRetry(ctx, d, l.fetch); err != nil {
			return AggregationDone{}, fmt.Errorf("blob %s: %w", d, err)
		}
	}
	req, err := AggregationRequest(*a, l.store.Path, global)
	if err != nil {
		return AggregationDone{}, err
	}
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return AggregationDone{}, err
	}
	work, err := os.MkdirTemp(l.dir, fmt.Sprintf("agg-r%d-", a.Round))
	if err != nil {
		return AggregationDone{}, err
	}
	defer os.RemoveAll(work)
	req.Out = filepath.Join(work, "global.safetensors")
	if so, ok := req.Strategy.(aggregator.ServerOptimizer); ok && so.Optimizes() && len(so.StateSlots()) > 0 {
		req.StateOut = filepath.Join(work, "state.safetensors")
	}
	req.Logger = l.log.With("job", a.JobID, "round", a.Round)
	req.Backend = l.Backend
	res, err := aggregator.Aggregate(ctx, req)
	if err != nil {
		return AggregationDone{}, err
	}
	d, err := l.putFile(ctx, res.Path, res.Digest)
	if err != nil {
		return AggregationDone{}, err
	}
	done := AggregationDone{Round: a.Round, Model: d, Weights: map[string]float64{}, Rejected: map[string]string{}}
	if req.StateOut != "" {
		if done.State, err = l.putFile(ctx, res.StatePath, res.StateDigest); err != nil {
			return AggregationDone{}, err
		}
	}
	for _, c := range res.Accepted {
		done.Weights[c.ContributorID] = res.Weights[c.Key()]
	}
	for _, r := range res.Rejected {
		// Name the update by digest, not by this node's file path.
		why := r.Reason()
		if r.Path != "" {
			why = strings.ReplaceAll(why, r.Path, "update "+inputDigest(*a, r.ContributorID))
		}
		done.Rejected[r.ContributorID] = truncateReason(why)
		l.own.Reject(a.JobID, a.Round, inputDigest(*a, r.ContributorID), why)
	}
	for t, why := range rejected {
		done.Rejected[t] = why
	}
	l.own.produced(a.JobID, a.Round, done)
	if n := len(done.Weights); n < minTrainers {
		l.own.Fail(a.JobID, a.Round, fmt.Sprintf("only %d updates passed the aggregator's checks; need %d", n, minTrainers))
	}
	return done, nil
}

func (l *LocalAggregator) putFile(ctx context.Context, path, want string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := l.store.PutExpect(ctx, want, f); err != nil {
		return "", fmt.Errorf("store %s: %w", path, err)
	}
	return want, nil
}

// ErrAggregatorRefused is wrapped when a remote aggregator's identity is
// not the configured one or not an active aggregator member of the ledger.
var ErrAggregatorRefused = errors.New("coordinator: aggregator refused")

// AggregatorVerifier returns the tlsid check the coordinator applies to a
// remote aggregator: its key ID must be id and an active member of the
// ledger with role aggregator.
func AggregatorVerifier(c *client.Client, id string) tlsid.Verifier {
	return func(peer string) error {
		if peer != id {
			return fmt.Errorf("%w: the peer is %s, the config names %s", ErrAggregatorRefused, peer, id)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m, err := c.Member(ctx, peer)
		switch {
		case err != nil:
			return fmt.Errorf("%w: %s: %w", ErrAggregatorRefused, peer, err)
		case !m.Active:
			return fmt.Errorf("%w: %s was removed from the ledger", ErrAggregatorRefused, peer)
		case m.Role != ledger.RoleAggregator:
			return fmt.Errorf("%w: %s has role %s on the ledger, not aggregator", ErrAggregatorRefused, peer, m.Role)
		}
		return nil
	}
}

// ErrAggregatorUnavailable is wrapped when a remote aggregator cannot be
// reached (nothing was aggregated; the coordinator tries again).
var ErrAggregatorUnavailable = errors.New("coordinator: aggregator unavailable")

// RemoteAggregator is an Aggregator served by a standalone aggregator
// process over fedtune.aggregator.v1.
type RemoteAggregator struct {
	id   string
	conn *grpc.ClientConn
	c    aggregatorv1.AggregatorClient
}

// DialAggregator connects to the aggregator at addr whose ledger key ID is
// id; opts carry the transport (tlsid.DialOption with AggregatorVerifier,
// or tlsid.InsecureDialOption).
func DialAggregator(addr, id string, opts ...grpc.DialOption) (*RemoteAggregator, error) {
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("aggregator %s: %w", addr, err)
	}
	return &RemoteAggregator{id: id, conn: conn, c: aggregatorv1.NewAggregatorClient(conn)}, nil
}

// Close closes the connection.
func (r *RemoteAggregator) Close() error { return r.conn.Close() }

// Conn returns the client connection to the aggregator.
func (r *RemoteAggregator) Conn() *grpc.ClientConn { return r.conn }

// ID implements Aggregator.
func (r *RemoteAggregator) ID() string { return r.id }

// Aggregate implements Aggregator.
func (r *RemoteAggregator) Aggregate(ctx context.Context, a AggregationTask, global string) (AggregationDone, error) {
	resp, err := r.c.Aggregate(ctx, AggregateRequestProto(a, global))
	if err != nil {
		st := status.Convert(err)
		if st.Code() == codes.Unavailable {
			return AggregationDone{}, fmt.Errorf("%w: remote aggregator: %s", ErrAggregatorUnavailable, st.Message())
		}
		return AggregationDone{}, fmt.Errorf("remote aggregator: %s", st.Message())
	}
	done := AggregationDone{Round: a.Round, Model: resp.Model, State: resp.State, Weights: resp.Weights, Rejected: resp.Rejected}
	if done.Weights == nil {
		done.Weights = map[string]float64{}
	}
	if done.Rejected == nil {
		done.Rejected = map[string]string{}
	}
	if _, err := artifact.ParseDigest(done.Model); err != nil {
		return AggregationDone{}, fmt.Errorf("remote aggregator: model: %w", err)
	}
	return done, nil
}

// Submit implements Aggregator.
func (r *RemoteAggregator) Submit(ctx context.Context, body ledger.TxBody) (uint64, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	resp, err := r.c.SubmitTx(ctx, &aggregatorv1.SubmitTxRequest{Type: body.TxType(), Body: data})
	if err != nil {
		st := status.Convert(err)
		if rej := client.FromStatus(err); errors.Is(rej, client.ErrRejected) {
			return 0, fmt.Errorf("%s: %w", body.TxType(), rej)
		}
		if st.Code() == codes.FailedPrecondition {
			return 0, fmt.Errorf("%s: %w", body.TxType(), &client.RejectedError{Reason: st.Message()})
		}
		return 0, fmt.Errorf("%s: remote aggregator: %s", body.TxType(), st.Message())
	}
	return resp.Height, nil
}

// AggregateRequestProto is the wire form of an aggregation task.
func AggregateRequestProto(a AggregationTask, global string) *aggregatorv1.AggregateRequest {
	o := a.Options
	req := &aggregatorv1.AggregateRequest{JobId: a.JobID, Round: a.Round, Base: a.Base, Global: global, State: a.State,
		Strategy: a.Strategy, Params: a.Params, Options: &aggregatorv1.Options{Clip: o.Clip, NoiseMultiplier: o.NoiseMultiplier,
			Seed: o.Seed, MaxNorm: o.MaxNorm, ChunkElems: int64(o.ChunkElems), Threads: int32(o.Threads), Strict: o.Strict}}
	for _, in := range a.Inputs {
		req.Inputs = append(req.Inputs, &aggregatorv1.Input{Trainer: in.Trainer, Digest: in.Digest, Dataset: in.Dataset, Samples: in.Samples})
	}
	return req
}

// AggregationTaskFromProto is the inverse of AggregateRequestProto; it
// returns the task and its global digest.
func AggregationTaskFromProto(req *aggregatorv1.AggregateRequest) (AggregationTask, string) {
	a := AggregationTask{JobID: req.JobId, Round: req.Round, Base: req.Base, State: req.State, Strategy: req.Strategy, Params: req.Params}
	if o := req.Options; o != nil {
		a.Options = aggregator.Options{Clip: o.Clip, NoiseMultiplier: o.NoiseMultiplier, Seed: o.Seed, MaxNorm: o.MaxNorm,
			ChunkElems: int(o.ChunkElems), Threads: int(o.Threads), Strict: o.Strict}
	}
	for _, in := range req.Inputs {
		a.Inputs = append(a.Inputs, Input{Trainer: in.Trainer, Digest: in.Digest, Dataset: in.Dataset, Samples: in.Samples})
	}
	return a, req.Global
}

// DecodeAggregatorTx decodes the JSON body of an aggregator-role
// transaction of the given type; other types are refused.
func DecodeAggregatorTx(typ string, body []byte) (ledger.TxBody, error) {
	var b ledger.TxBody
	var err error
	switch typ {
	case ledger.TypeUpdateRejected:
		var v ledger.UpdateRejected
		err = strictjson.Unmarshal(body, &v)
		b = v
	case ledger.TypeRoundCommitted:
		var v ledger.RoundCommitted
		err = strictjson.Unmarshal(body, &v)
		b = v
	case ledger.TypeRoundFailed:
		var v ledger.RoundFailed
		err = strictjson.Unmarshal(body, &v)
		b = v
	default:
		return nil, fmt.Errorf("transaction type %q is not signed by the aggregator", typ)
	}
	if err != nil {
		return nil, fmt.Errorf("%s body: %w", typ, err)
	}
	return b, nil
}
