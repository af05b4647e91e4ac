package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedtune/fedtune/aggregator/round"
	aggregatorv1 "github.com/fedtune/fedtune/api/aggregator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// Aggregator is the aggregator role as the Service sees it: it runs a
// round's aggregation and signs and submits the aggregator-role
// transactions (UpdateRejected, RoundCommitted, RoundFailed). The
// in-process implementation is round.Local (over the Service's store,
// with the aggregator key); RemoteAggregator calls a standalone aggregator
// process (fedtune aggregator start, package aggregator/node).
type Aggregator interface {
	// ID returns the aggregator's ledger key ID.
	ID() string
	// Aggregate combines the task's inputs over the reference weights
	// global ("" for none) and returns the result, whose model (and state)
	// are in the coordinator's artifact store when it returns.
	Aggregate(ctx context.Context, a round.Task, global string) (round.Result, error)
	// Submit signs body with the aggregator key and waits for the ledger,
	// like (*client.Signer).Submit: a rejection wraps client.ErrRejected.
	Submit(ctx context.Context, body ledger.TxBody) (uint64, error)
}

var (
	_ Aggregator = (*round.Local)(nil)
	_ Aggregator = (*RemoteAggregator)(nil)
)

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
func (r *RemoteAggregator) Aggregate(ctx context.Context, a round.Task, global string) (round.Result, error) {
	resp, err := r.c.Aggregate(ctx, a.Proto(global))
	if err != nil {
		st := status.Convert(err)
		if st.Code() == codes.Unavailable {
			return round.Result{}, fmt.Errorf("%w: remote aggregator: %s", ErrAggregatorUnavailable, st.Message())
		}
		return round.Result{}, fmt.Errorf("remote aggregator: %s", st.Message())
	}
	done := round.Result{Round: a.Round, Model: resp.Model, State: resp.State, Weights: resp.Weights, Rejected: resp.Rejected}
	if done.Weights == nil {
		done.Weights = map[string]float64{}
	}
	if done.Rejected == nil {
		done.Rejected = map[string]string{}
	}
	if _, err := artifact.ParseDigest(done.Model); err != nil {
		return round.Result{}, fmt.Errorf("remote aggregator: model: %w", err)
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
