package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

// LimitsConfig bounds what one caller may ask of a node. A caller is the
// key ID of its TLS client certificate when it has one, else its remote
// host. Zero fields take the defaults of DefaultLimits.
type LimitsConfig struct {
	// MaxSubmitBytes bounds the envelope bytes of one Submit request.
	MaxSubmitBytes int `yaml:"max_submit_bytes"`
	// MaxSubmitTxs bounds the txs of one Submit request.
	MaxSubmitTxs int `yaml:"max_submit_txs"`
	// SubmitTxRate is each caller's sustained txs per second into Submit,
	// SubmitTxBurst the most at once.
	SubmitTxRate  float64 `yaml:"submit_tx_rate"`
	SubmitTxBurst int     `yaml:"submit_tx_burst"`
	// SubmitByteRate is each caller's sustained envelope bytes per second
	// into Submit, SubmitByteBurst the most at once (at least
	// MaxSubmitBytes).
	SubmitByteRate  float64 `yaml:"submit_byte_rate"`
	SubmitByteBurst int     `yaml:"submit_byte_burst"`
	// MaxRange bounds the blocks one StreamBlocks call sends without
	// following (a caller asks again from where it stopped) and the
	// records of one list query.
	MaxRange int `yaml:"max_range"`
	// MaxStreams bounds the StreamBlocks calls one caller holds open.
	MaxStreams int `yaml:"max_streams"`
}

// DefaultLimits are the limits a node config leaves out. The tx rate is
// set well above what one ledger serves (ledgerbench's clients all come
// from one host); the byte rate is what stops a flood of large txs.
func DefaultLimits() LimitsConfig {
	return LimitsConfig{
		MaxSubmitBytes:  16 << 20,
		MaxSubmitTxs:    4096,
		SubmitTxRate:    100000,
		SubmitTxBurst:   200000,
		SubmitByteRate:  128 << 20,
		SubmitByteBurst: 256 << 20,
		MaxRange:        1024,
		MaxStreams:      16,
	}
}

func (l LimitsConfig) withDefaults() LimitsConfig {
	d := DefaultLimits()
	if l.MaxSubmitBytes == 0 {
		l.MaxSubmitBytes = d.MaxSubmitBytes
	}
	if l.MaxSubmitTxs == 0 {
		l.MaxSubmitTxs = d.MaxSubmitTxs
	}
	if l.SubmitTxRate == 0 {
		l.SubmitTxRate = d.SubmitTxRate
	}
	if l.SubmitTxBurst == 0 {
		l.SubmitTxBurst = max(d.SubmitTxBurst, l.MaxSubmitTxs)
		if l.SubmitTxRate < d.SubmitTxRate {
			l.SubmitTxBurst = max(int(l.SubmitTxRate), 1)
		}
	}
	if l.SubmitByteRate == 0 {
		l.SubmitByteRate = d.SubmitByteRate
	}
	if l.SubmitByteBurst == 0 {
		l.SubmitByteBurst = max(d.SubmitByteBurst, l.MaxSubmitBytes)
	}
	if l.MaxRange == 0 {
		l.MaxRange = d.MaxRange
	}
	if l.MaxStreams == 0 {
		l.MaxStreams = d.MaxStreams
	}
	return l
}

func (l LimitsConfig) validate() error {
	if l.MaxSubmitBytes < 0 || l.MaxSubmitTxs < 0 || l.SubmitTxRate < 0 || l.SubmitTxBurst < 0 ||
		l.SubmitByteRate < 0 || l.SubmitByteBurst < 0 || l.MaxRange < 0 || l.MaxStreams < 0 {
		return errors.New("limits: values must not be negative")
	}
	return nil
}

// limiters keeps one pair of token buckets per caller, dropping callers
// idle for a while so that the map stays bounded by the active ones.
type limiters struct {
	cfg  LimitsConfig
	mu   sync.Mutex
	m    map[string]*callerLimit
	last time.Time // last sweep
	// streams counts each caller's open StreamBlocks calls.
	streams map[string]int
}

type callerLimit struct {
	txs, bytes *rate.Limiter
	used       time.Time
}

func newLimiters(cfg LimitsConfig) *limiters {
	return &limiters{cfg: cfg, m: map[string]*callerLimit{}, streams: map[string]int{}}
}

// openStream counts a stream of caller, or refuses one over MaxStreams.
func (ls *limiters) openStream(caller string) (release func(), err error) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.streams[caller] >= ls.cfg.MaxStreams {
		return nil, fmt.Errorf("caller %s already holds %d streams, this node's limit (limits.max_streams)", caller, ls.cfg.MaxStreams)
	}
	ls.streams[caller]++
	return func() {
		ls.mu.Lock()
		defer ls.mu.Unlock()
		if ls.streams[caller]--; ls.streams[caller] <= 0 {
			delete(ls.streams, caller)
		}
	}, nil
}

// allow takes txs and size tokens from caller's buckets, or says why not.
func (ls *limiters) allow(caller string, txs, size int) error {
	now := time.Now()
	ls.mu.Lock()
	if now.Sub(ls.last) > time.Minute {
		for k, c := range ls.m {
			if now.Sub(c.used) > time.Minute {
				delete(ls.m, k)
			}
		}
		ls.last = now
	}
	c, ok := ls.m[caller]
	if !ok {
		c = &callerLimit{txs: rate.NewLimiter(rate.Limit(ls.cfg.SubmitTxRate), ls.cfg.SubmitTxBurst),
			bytes: rate.NewLimiter(rate.Limit(ls.cfg.SubmitByteRate), ls.cfg.SubmitByteBurst)}
		ls.m[caller] = c
	}
	c.used = now
	ls.mu.Unlock()
	if !c.txs.AllowN(now, txs) {
		return fmt.Errorf("caller %s is over its Submit rate of %g txs/s (burst %d); slow down and retry", caller, ls.cfg.SubmitTxRate, ls.cfg.SubmitTxBurst)
	}
	if !c.bytes.AllowN(now, size) {
		return fmt.Errorf("caller %s is over its Submit rate of %g bytes/s (burst %d); slow down and retry", caller, ls.cfg.SubmitByteRate, ls.cfg.SubmitByteBurst)
	}
	return nil
}

// callerKey names the caller of a gRPC call for its limits: "node <ID>"
// or "key <ID>" for a TLS peer, else "host <address>".
func callerKey(ctx context.Context) string {
	if id, err := tlsid.PeerID(ctx); err == nil {
		return "key " + id
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		host, _, err := net.SplitHostPort(p.Addr.String())
		if err != nil {
			host = p.Addr.String()
		}
		return "host " + host
	}
	return "unknown"
}

// admitted is a Submit request after admission: the txs to go on, their
// decodings, and the answers already known for the others.
type admitted struct {
	txs     [][]byte
	decoded []*ledger.Tx
	index   []int // position of txs[i] in the request
	results []*ledgerv1.TxResult
}

// merge places the results of the admitted txs among the early answers.
func (a *admitted) merge(rs []*ledgerv1.TxResult) []*ledgerv1.TxResult {
	for i, r := range rs {
		if i < len(a.index) {
			a.results[a.index[i]] = r
		}
	}
	return a.results
}

// admitSubmit enforces the caller's limits on a Submit request (over them:
// ResourceExhausted) and runs ledger.FSM.Admit on each tx, so that a tx
// the ledger would refuse whatever the next block holds (a stranger's, a
// forged one, one over max_tx_bytes, a stale or far nonce) is answered
// here and never forwarded, queued or replicated. Forwarded requests from
// other nodes are checked again: a node does not trust its peers' checks.
func (n *Node) admitSubmit(ctx context.Context, req *ledgerv1.SubmitRequest) (*admitted, error) {
	lim := n.limits.cfg
	if len(req.Txs) > lim.MaxSubmitTxs {
		n.metrics.refused.WithLabelValues("submit_too_many").Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "submit: %d txs in one request, this node's limit is %d (limits.max_submit_txs)", len(req.Txs), lim.MaxSubmitTxs)
	}
	size := 0
	for _, tx := range req.Txs {
		size += len(tx)
	}
	if size > lim.MaxSubmitBytes {
		n.metrics.refused.WithLabelValues("submit_too_large").Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "submit: request holds %d envelope bytes, this node's limit is %d (limits.max_submit_bytes)", size, lim.MaxSubmitBytes)
	}
	caller := callerKey(ctx)
	if n.isNodeCaller(caller) {
		// another ledger node (TLS-authenticated) forwarding its callers'
		// txs: they were limited where they entered.
	} else if err := n.limits.allow(caller, len(req.Txs), size); err != nil {
		n.metrics.refused.WithLabelValues("rate_limited").Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "submit: %v", err)
	}
	a := &admitted{results: make([]*ledgerv1.TxResult, len(req.Txs))}
	leader := n.raft.State() == raft.Leader
	for i, env := range req.Txs {
		tx, err := n.fsm.Admit(env)
		if err != nil {
			var te *ledger.TxError
			if !errors.As(err, &te) {
				return nil, toStatus(err)
			}
			if !leader && lagSensitive(te) {
				// This follower's state may lag the leader's (the signer's
				// MemberAdded, or its last nonces, committed but not yet
				// applied here): the leader decides, before proposing.
				a.txs = append(a.txs, env)
				a.decoded = append(a.decoded, nil)
				a.index = append(a.index, i)
				continue
			}
			h := ledger.TxHash(env)
			if r := n.committed(h); r != nil {
				a.results[i] = r // a resubmitted tx already on the chain
				continue
			}
			n.metrics.txsRejected.Inc()
			n.metrics.refused.WithLabelValues("tx_" + string(te.Code)).Inc()
			a.results[i] = rejected(h, err)
			continue
		}
		n.fsm.NoteDecoded(tx)
		a.txs = append(a.txs, env)
		a.decoded = append(a.decoded, tx)
		a.index = append(a.index, i)
	}
	return a, nil
}

// clampRange bounds a block range [from, to] asked of this node to
// limits.max_range blocks; it returns the last height to send.
func (n *Node) clampRange(from, to uint64) uint64 {
	if m := uint64(n.limits.cfg.MaxRange); to-from+1 > m || to < from {
		return from + m - 1
	}
	return to
}

// isNodeCaller reports whether caller (callerKey) is a TLS peer whose key
// is a current ledger node of this chain.
func (n *Node) isNodeCaller(caller string) bool {
	id, ok := strings.CutPrefix(caller, "key ")
	if !ok {
		return false
	}
	r, ok := n.fsm.NodeMember(id)
	return ok && r.Current()
}

// lagSensitive reports whether an admission refusal may only mean that
// this node's state lags the leader's: an unknown signer (added in a block
// not applied here yet) or a nonce beyond the window (earlier nonces not
// applied here yet). Everything else Admit refuses for would be refused
// by the leader too (a removed member or a replaced key can only make a
// lagging node accept what the leader then refuses).
func lagSensitive(te *ledger.TxError) bool {
	return te.Code == ledger.CodeUnknownSigner && strings.HasSuffix(te.Msg, "is not a member") ||
		te.Code == ledger.CodeBadNonce && strings.Contains(te.Msg, "more than")
}
