package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
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

// LimitsConfig bounds what one caller may ask of a node. A caller is named
// by the key of its TLS client certificate when that key is an active
// member or a ledger node of the chain (as this node's state knows it),
// else by its remote host: a stranger gains nothing by presenting a new
// key per call. All callers that are not members or nodes also share one
// budget (NonMember*). Zero fields take the defaults of DefaultLimits.
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
	// NonMemberTxRate is the sustained txs per second into Submit of all
	// callers together whose TLS key is neither an active member nor a
	// ledger node here (strangers, and members whose MemberAdded this node
	// has not applied yet), NonMemberTxBurst the most at once.
	NonMemberTxRate  float64 `yaml:"non_member_tx_rate"`
	NonMemberTxBurst int     `yaml:"non_member_tx_burst"`
	// NonMemberByteRate and NonMemberByteBurst bound the envelope bytes of
	// those callers together likewise.
	NonMemberByteRate  float64 `yaml:"non_member_byte_rate"`
	NonMemberByteBurst int     `yaml:"non_member_byte_burst"`
	// MaxCallers bounds the callers this node keeps a rate limit for;
	// callers beyond it (while the others are active) share one limit.
	MaxCallers int `yaml:"max_callers"`
	// QueryRate is each caller's sustained read requests per second (Query,
	// GetTx, GetBlock, StreamBlocks calls, Status), QueryBurst the most at
	// once. Ledger nodes are not limited.
	QueryRate  float64 `yaml:"query_rate"`
	QueryBurst int     `yaml:"query_burst"`
	// NonMemberQueryRate is the sustained read requests per second of all
	// callers together whose TLS key is neither an active member nor a
	// ledger node here, NonMemberQueryBurst the most at once; it also paces
	// the blocks StreamBlocks sends them (one read per 32 blocks).
	NonMemberQueryRate  float64 `yaml:"non_member_query_rate"`
	NonMemberQueryBurst int     `yaml:"non_member_query_burst"`
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

		NonMemberTxRate:    100,
		NonMemberTxBurst:   200,
		NonMemberByteRate:  1 << 20,
		NonMemberByteBurst: 4 << 20,
		MaxCallers:         10000,

		QueryRate:           500,
		QueryBurst:          1000,
		NonMemberQueryRate:  100,
		NonMemberQueryBurst: 200,
	}
}

func (l LimitsConfig) withDefaults() LimitsConfig {
	d := DefaultLimits()
	l.MaxSubmitBytes = cmp.Or(l.MaxSubmitBytes, d.MaxSubmitBytes)
	l.MaxSubmitTxs = cmp.Or(l.MaxSubmitTxs, d.MaxSubmitTxs)
	l.SubmitTxRate = cmp.Or(l.SubmitTxRate, d.SubmitTxRate)
	if l.SubmitTxBurst == 0 {
		l.SubmitTxBurst = max(d.SubmitTxBurst, l.MaxSubmitTxs)
		if l.SubmitTxRate < d.SubmitTxRate {
			l.SubmitTxBurst = max(int(l.SubmitTxRate), 1)
		}
	}
	l.SubmitByteRate = cmp.Or(l.SubmitByteRate, d.SubmitByteRate)
	if l.SubmitByteBurst == 0 {
		l.SubmitByteBurst = max(d.SubmitByteBurst, l.MaxSubmitBytes)
	}
	l.MaxRange = cmp.Or(l.MaxRange, d.MaxRange)
	l.MaxStreams = cmp.Or(l.MaxStreams, d.MaxStreams)
	l.NonMemberTxRate = cmp.Or(l.NonMemberTxRate, d.NonMemberTxRate)
	if l.NonMemberTxBurst == 0 {
		l.NonMemberTxBurst = max(d.NonMemberTxBurst, int(l.NonMemberTxRate))
	}
	l.NonMemberByteRate = cmp.Or(l.NonMemberByteRate, d.NonMemberByteRate)
	if l.NonMemberByteBurst == 0 {
		l.NonMemberByteBurst = max(d.NonMemberByteBurst, int(l.NonMemberByteRate))
	}
	l.MaxCallers = cmp.Or(l.MaxCallers, d.MaxCallers)
	l.QueryRate = cmp.Or(l.QueryRate, d.QueryRate)
	if l.QueryBurst == 0 {
		l.QueryBurst = max(d.QueryBurst, int(l.QueryRate))
		if l.QueryRate < d.QueryRate {
			l.QueryBurst = max(int(2*l.QueryRate), 1)
		}
	}
	l.NonMemberQueryRate = cmp.Or(l.NonMemberQueryRate, d.NonMemberQueryRate)
	if l.NonMemberQueryBurst == 0 {
		l.NonMemberQueryBurst = max(d.NonMemberQueryBurst, int(l.NonMemberQueryRate))
		if l.NonMemberQueryRate < d.NonMemberQueryRate {
			l.NonMemberQueryBurst = max(int(2*l.NonMemberQueryRate), 1)
		}
	}
	return l
}

func (l LimitsConfig) validate() error {
	if l.MaxSubmitBytes < 0 || l.MaxSubmitTxs < 0 || l.SubmitTxRate < 0 || l.SubmitTxBurst < 0 ||
		l.SubmitByteRate < 0 || l.SubmitByteBurst < 0 || l.MaxRange < 0 || l.MaxStreams < 0 ||
		l.NonMemberTxRate < 0 || l.NonMemberTxBurst < 0 || l.NonMemberByteRate < 0 || l.NonMemberByteBurst < 0 || l.MaxCallers < 0 ||
		l.QueryRate < 0 || l.QueryBurst < 0 || l.NonMemberQueryRate < 0 || l.NonMemberQueryBurst < 0 {
		return errors.New("limits: values must not be negative")
	}
	return nil
}

// limiters keeps one pair of token buckets per caller, dropping callers
// idle for a minute; at most MaxCallers of them, callers beyond that share
// the overflow pair (so that the map stays bounded and a new name never
// buys a fresh burst). nonMember is the pair all non-member callers share.
type limiters struct {
	cfg       LimitsConfig
	mu        sync.Mutex
	m         map[string]*callerLimit
	last      time.Time // last sweep
	overflow  *callerLimit
	nonMember *callerLimit
	// streams counts each caller's open StreamBlocks calls.
	streams map[string]int
}

type callerLimit struct {
	txs, bytes *rate.Limiter
	reads      *rate.Limiter
	used       time.Time
}

func newLimiters(cfg LimitsConfig) *limiters {
	return &limiters{cfg: cfg, m: map[string]*callerLimit{}, streams: map[string]int{},
		overflow: newCallerLimit(cfg.SubmitTxRate, cfg.SubmitTxBurst, cfg.SubmitByteRate, cfg.SubmitByteBurst,
			cfg.QueryRate, cfg.QueryBurst),
		nonMember: newCallerLimit(cfg.NonMemberTxRate, cfg.NonMemberTxBurst, cfg.NonMemberByteRate, cfg.NonMemberByteBurst,
			cfg.NonMemberQueryRate, cfg.NonMemberQueryBurst)}
}

func newCallerLimit(txRate float64, txBurst int, byteRate float64, byteBurst int, readRate float64, readBurst int) *callerLimit {
	return &callerLimit{txs: rate.NewLimiter(rate.Limit(txRate), txBurst), bytes: rate.NewLimiter(rate.Limit(byteRate), byteBurst),
		reads: rate.NewLimiter(rate.Limit(readRate), readBurst)}
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

// get returns caller's buckets, creating them while the map has room.
func (ls *limiters) get(caller string, now time.Time) *callerLimit {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if now.Sub(ls.last) > time.Minute || (len(ls.m) >= ls.cfg.MaxCallers && now.Sub(ls.last) > time.Second) {
		for k, c := range ls.m {
			if now.Sub(c.used) > time.Minute {
				delete(ls.m, k)
			}
		}
		ls.last = now
	}
	c, ok := ls.m[caller]
	if !ok {
		if len(ls.m) >= ls.cfg.MaxCallers {
			return ls.overflow
		}
		c = newCallerLimit(ls.cfg.SubmitTxRate, ls.cfg.SubmitTxBurst, ls.cfg.SubmitByteRate, ls.cfg.SubmitByteBurst,
			ls.cfg.QueryRate, ls.cfg.QueryBurst)
		ls.m[caller] = c
	}
	c.used = now
	return c
}

// allow takes txs and size tokens from the buckets of caller (and, for a
// caller that is no member or node, from the non-members' shared ones),
// or says why not.
func (ls *limiters) allow(c caller, txs, size int) error {
	now := time.Now()
	l := ls.get(c.name, now)
	if !l.txs.AllowN(now, txs) {
		return fmt.Errorf("caller %s is over its Submit rate of %g txs/s (burst %d); slow down and retry", c.name, ls.cfg.SubmitTxRate, ls.cfg.SubmitTxBurst)
	}
	if !l.bytes.AllowN(now, size) {
		return fmt.Errorf("caller %s is over its Submit rate of %g bytes/s (burst %d); slow down and retry", c.name, ls.cfg.SubmitByteRate, ls.cfg.SubmitByteBurst)
	}
	if c.trusted {
		return nil
	}
	if !ls.nonMember.txs.AllowN(now, txs) {
		return fmt.Errorf("callers that are not members of the chain are over their shared Submit rate of %g txs/s (burst %d, limits.non_member_tx_rate); a new member's key counts as a member once its MemberAdded is applied here", ls.cfg.NonMemberTxRate, ls.cfg.NonMemberTxBurst)
	}
	if !ls.nonMember.bytes.AllowN(now, size) {
		return fmt.Errorf("callers that are not members of the chain are over their shared Submit rate of %g bytes/s (burst %d, limits.non_member_byte_rate)", ls.cfg.NonMemberByteRate, ls.cfg.NonMemberByteBurst)
	}
	return nil
}

// allowRead takes one read token of caller's (and, for a caller that is
// no member or node, one of the non-members' shared bucket), or says why
// not.
func (ls *limiters) allowRead(c caller) (shared bool, err error) {
	now := time.Now()
	l := ls.get(c.name, now)
	if !l.reads.AllowN(now, 1) {
		return false, fmt.Errorf("caller %s is over its read rate of %g requests/s (burst %d, limits.query_rate); slow down and retry", c.name, ls.cfg.QueryRate, ls.cfg.QueryBurst)
	}
	if c.trusted {
		return false, nil
	}
	if !ls.nonMember.reads.AllowN(now, 1) {
		return true, fmt.Errorf("callers that are not members of the chain are over their shared read rate of %g requests/s (burst %d, limits.non_member_query_rate); members are served on their own budgets", ls.cfg.NonMemberQueryRate, ls.cfg.NonMemberQueryBurst)
	}
	return false, nil
}

// admitRead enforces the read limits on one call of rpc (over them:
// ResourceExhausted naming the limit). Ledger nodes are not limited.
func (n *Node) admitRead(ctx context.Context, rpc string) (caller, error) {
	c := n.callerOf(ctx)
	if c.node {
		n.metrics.reads.WithLabelValues(rpc, "node").Inc()
		return c, nil
	}
	kind := "member"
	if !c.trusted {
		kind = "non_member"
	}
	if shared, err := n.limits.allowRead(c); err != nil {
		reason := "read_rate_limited"
		if shared {
			reason = "read_rate_limited_non_members"
		}
		n.metrics.refused.WithLabelValues(reason).Inc()
		return c, status.Errorf(codes.ResourceExhausted, "%s: %v", rpc, err)
	}
	n.metrics.reads.WithLabelValues(rpc, kind).Inc()
	return c, nil
}

// paceRead waits for one token of the non-members' shared read bucket
// while blocks are streamed to a caller that is no member or node.
func (n *Node) paceRead(ctx context.Context, c caller) error {
	if c.trusted {
		return nil
	}
	if err := n.limits.nonMember.reads.Wait(ctx); err != nil {
		return status.Errorf(codes.ResourceExhausted, "stream blocks: paced at the non-members' shared read rate of %g/s (limits.non_member_query_rate): %v", n.limits.cfg.NonMemberQueryRate, err)
	}
	return nil
}

// caller is who called a gRPC method, as the limits see it.
type caller struct {
	// name is "node <ID>" or "key <ID>" for a TLS peer whose key is a
	// ledger node or an active member, else "host <address>".
	name string
	// id is the TLS key ID, "" without one.
	id string
	// node: id is a current ledger node; trusted: a node or active member.
	node, trusted bool
}

// callerOf names the caller of a gRPC call (see caller).
func (n *Node) callerOf(ctx context.Context) caller {
	var c caller
	if id, err := tlsid.PeerID(ctx); err == nil {
		c.id = id
		if r, ok := n.fsm.NodeMember(id); ok && r.Current() {
			return caller{name: "node " + id, id: id, node: true, trusted: true}
		}
		if m, err := n.fsm.Member(id); err == nil && m.Active {
			return caller{name: "key " + id, id: id, trusted: true}
		}
	}
	c.name = "unknown"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		host, _, err := net.SplitHostPort(p.Addr.String())
		if err != nil {
			host = p.Addr.String()
		}
		c.name = "host " + host
	}
	return c
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
// ResourceExhausted) and runs fsm.FSM.Admit on each tx, so that a tx
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
	caller := n.callerOf(ctx)
	if caller.node {
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
			if !leader && te.MayBeLag() && (te.Cause == ledger.CauseNonceAhead || caller.trusted || signedBy(env, caller.id)) {
				// This follower's state may lag the leader's (the signer's
				// MemberAdded, or its last nonces, committed but not yet
				// applied here): the leader decides, before proposing. A
				// nonce ahead is a current member's genuinely signed tx;
				// an unknown signer's tx goes on only from a caller that
				// is a member or node here, or that signed it with its own
				// TLS key (a new member's first tx, bounded by the
				// non-members' shared limit). Any key can sign a tx: a
				// stranger relaying unknown signers' txs is answered here.
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

// signedBy reports whether envelope env decodes to a tx signed by key id.
func signedBy(env []byte, id string) bool {
	if id == "" {
		return false
	}
	tx, err := ledger.DecodeTx(env)
	return err == nil && tx.Signer == id
}
