package coordinator

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedtune/fedtune/aggregator/round"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/internal/clock"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/ledger/ledgertest"
)

// twinLedger is the Service's Ledger over the ledger FSM in memory
// (ledgertest.Twin): no raft, no socket. Errors are NodeLedger's: a
// missing record wraps ledger.ErrRecordNotFound, a rejection is a
// client.RejectedError.
// With down set, every call fails as an unreachable node's would.
type twinLedger struct {
	tw   *ledgertest.Twin
	down atomic.Bool
}

var errTwinDown = errors.New("twin ledger: unreachable (test)")

func (l *twinLedger) read(what, key string, f func() (any, error)) (any, error) {
	if l.down.Load() {
		return nil, errTwinDown
	}
	v, err := f()
	if errors.Is(err, ledger.ErrRecordNotFound) {
		return nil, fmt.Errorf("%s %s: %w", what, abbrev(key), ledger.ErrRecordNotFound)
	}
	return v, err
}

func (l *twinLedger) Submit(_ context.Context, key ed25519.PrivateKey, body ledger.TxBody) (uint64, error) {
	if l.down.Load() {
		return 0, errTwinDown
	}
	h, err := l.tw.Submit(key, body)
	var te *ledger.TxError
	if errors.As(err, &te) {
		return 0, fmt.Errorf("%s: %w", body.TxType(), &client.RejectedError{TxError: te, Reason: te.Error()})
	}
	return h, err
}

func (l *twinLedger) Member(_ context.Context, id string) (*ledger.Member, error) {
	v, err := l.read("member", id, func() (any, error) { return l.tw.FSM().Member(id) })
	if err != nil {
		return nil, err
	}
	return v.(*ledger.Member), nil
}

func (l *twinLedger) Dataset(_ context.Context, d string) (*ledger.Dataset, error) {
	v, err := l.read("dataset", d, func() (any, error) { return l.tw.FSM().Dataset(d) })
	if err != nil {
		return nil, err
	}
	return v.(*ledger.Dataset), nil
}

func (l *twinLedger) Model(_ context.Context, d string) (*ledger.Model, error) {
	v, err := l.read("model", d, func() (any, error) { return l.tw.FSM().Model(d) })
	if err != nil {
		return nil, err
	}
	return v.(*ledger.Model), nil
}

func (l *twinLedger) Job(_ context.Context, id string) (*ledger.JobRecord, error) {
	v, err := l.read("job", id, func() (any, error) { return l.tw.FSM().Job(id) })
	if err != nil {
		return nil, err
	}
	return v.(*ledger.JobRecord), nil
}

func (l *twinLedger) Round(_ context.Context, job string, n, minHeight uint64) (*ledger.Round, error) {
	if err := l.tw.AtLeast(minHeight); err != nil {
		return nil, err
	}
	v, err := l.read("round", job, func() (any, error) { return l.tw.FSM().Round(job, n) })
	if err != nil {
		return nil, err
	}
	return v.(*ledger.Round), nil
}

func (l *twinLedger) Suspensions(_ context.Context, job string, minHeight uint64) ([]ledger.Suspension, error) {
	if err := l.tw.AtLeast(minHeight); err != nil {
		return nil, err
	}
	v, err := l.read("suspensions", job, func() (any, error) { return l.tw.FSM().Suspensions(job) })
	if err != nil {
		return nil, err
	}
	return v.([]ledger.Suspension), nil
}

func (l *twinLedger) UpdatesByDigest(_ context.Context, d string) ([]ledger.UpdateSubmission, error) {
	v, err := l.read("update", d, func() (any, error) { return l.tw.FSM().UpdatesByDigest(d) })
	if err != nil {
		return nil, err
	}
	return v.([]ledger.UpdateSubmission), nil
}

// testNet is a Service on a twin ledger and a fake clock, with the keys of
// its genesis members.
type testNet struct {
	s        *Service
	ledger   *twinLedger
	clock    *clock.Fake
	store    *artifact.Store
	admin    ed25519.PrivateKey
	coord    ed25519.PrivateKey
	agg      ed25519.PrivateKey
	trainers []ed25519.PrivateKey
}

// testAggregator signs with the aggregator key on the twin and aggregates
// through aggregate (nil: every aggregation fails).
type testAggregator struct {
	key       ed25519.PrivateKey
	ledger    Ledger
	aggregate func(round.Task, string) (round.Result, error)
}

func (a *testAggregator) ID() string { return ledger.KeyID(a.key.Public().(ed25519.PublicKey)) }

func (a *testAggregator) Aggregate(_ context.Context, t round.Task, global string) (round.Result, error) {
	if a.aggregate == nil {
		return round.Result{}, errors.New("test aggregator: no aggregation")
	}
	return a.aggregate(t, global)
}

func (a *testAggregator) Submit(ctx context.Context, body ledger.TxBody) (uint64, error) {
	return a.ledger.Submit(ctx, a.key, body)
}

// newTestNet returns a service on dir over a fresh twin ledger whose
// genesis holds an admin, the coordinator, the aggregator and trainers
// trainer members; the service is not running.
func newTestNet(t *testing.T, dir string, trainers int) (*testNet, error) {
	t.Helper()
	n := &testNet{clock: clock.NewFake(t0)}
	key := func() ed25519.PrivateKey {
		k, err := ledger.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	n.admin, n.coord, n.agg = key(), key(), key()
	g := ledger.Genesis{ChainID: "coordinator-test", Time: t0.Add(-time.Hour), Source: "test"}
	member := func(name string, role ledger.Role, k ed25519.PrivateKey) {
		g.Members = append(g.Members, ledger.GenesisMember{Name: name, Role: role, PublicKey: hex.EncodeToString(k.Public().(ed25519.PublicKey))})
	}
	member("admin", ledger.RoleAdmin, n.admin)
	member("coordinator", ledger.RoleCoordinator, n.coord)
	member("aggregator", ledger.RoleAggregator, n.agg)
	for i := range trainers {
		k := key()
		n.trainers = append(n.trainers, k)
		member(fmt.Sprintf("trainer-%d", i), ledger.RoleTrainer, k)
	}
	tw, err := ledgertest.NewTwin(g, n.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tw.Close() })
	n.ledger = &twinLedger{tw: tw}
	if n.store, err = artifact.OpenStore(filepath.Join(t.TempDir(), "store")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.store.Close() })
	n.s, err = n.newService(t, dir)
	return n, err
}

// newService returns another service of the net on dir (a restart, when
// dir is the last one's), with the same ledger, store, clock and keys.
func (n *testNet) newService(t *testing.T, dir string) (*Service, error) {
	var log *slog.Logger
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return NewService(ServiceConfig{CoordinatorKey: n.coord, Aggregator: &testAggregator{key: n.agg, ledger: n.ledger},
		Ledger: n.ledger, Store: n.store, Dir: dir, Clock: n.clock, Logger: log})
}

// newTestService returns a service on dir over a twin ledger.
func newTestService(t *testing.T, dir string) (*Service, error) {
	t.Helper()
	n, err := newTestNet(t, dir, 0)
	if err != nil {
		return nil, err
	}
	return n.s, nil
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
