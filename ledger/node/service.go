package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// maxHops bounds how often a request is forwarded between nodes looking for
// the leader.
const maxHops = 3

// service implements ledgerv1.LedgerServer on a Node.
type service struct {
	ledgerv1.UnimplementedLedgerServer
	n *Node
}

var _ ledgerv1.LedgerServer = (*service)(nil)

// Submit commits txs through the leader, forwarding when this node is not
// the leader.
func (s *service) Submit(ctx context.Context, req *ledgerv1.SubmitRequest) (*ledgerv1.SubmitResponse, error) {
	if req.Hops > 0 {
		if _, err := s.n.requireNode(ctx, "a forwarded Submit (hops > 0)"); err != nil {
			return nil, err
		}
	}
	if len(req.Txs) == 0 {
		return &ledgerv1.SubmitResponse{}, nil
	}
	adm, err := s.n.admitSubmit(ctx, req)
	if err != nil {
		return nil, err
	}
	if len(adm.txs) == 0 {
		return &ledgerv1.SubmitResponse{Results: adm.results}, nil
	}
	for {
		results, err := s.n.submitLocal(ctx, adm.txs, adm.decoded)
		if err == nil {
			return &ledgerv1.SubmitResponse{Results: adm.merge(results)}, nil
		}
		if !errors.Is(err, errNotLeader) {
			return nil, toStatus(err)
		}
		if req.Hops >= maxHops {
			return nil, status.Errorf(codes.Unavailable, "not the leader after %d forwards", req.Hops)
		}
		c, err := s.n.leaderClient(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		if c == nil {
			continue // became leader meanwhile
		}
		results, err = s.n.forward(ctx, c, adm.txs, req.Hops+1)
		if err != nil {
			return nil, err
		}
		return &ledgerv1.SubmitResponse{Results: adm.merge(results)}, nil
	}
}

// leaderClient waits until a leader is known and returns a client for it,
// or nil when this node is the leader.
func (n *Node) leaderClient(ctx context.Context) (ledgerv1.LedgerClient, error) {
	wait := n.cfg.Raft.ElectionTimeout*10 + 5*time.Second
	deadline := time.Now().Add(wait)
	for {
		if n.raft.State() == raft.Leader {
			return nil, nil
		}
		_, id := n.raft.LeaderWithID()
		if id != "" {
			return n.peerClient(ctx, string(id))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w after %v", ErrNoLeader, wait)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-n.done:
			return nil, ErrStopped
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// toStatus maps node and ledger errors to gRPC status errors.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, ledger.ErrRecordNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.As(err, new(*ledger.TxError)):
		return client.StatusError(codes.FailedPrecondition, err)
	case errors.Is(err, ErrNoLeader), errors.Is(err, ErrStopped):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, client.ErrQuorum):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// blockResponse reads block h and its hash.
func (n *Node) blockResponse(h uint64) (*ledgerv1.BlockResponse, [32]byte, error) {
	if head := n.fsm.Height(); h > head {
		return nil, [32]byte{}, status.Errorf(codes.NotFound, "block %d: not applied yet (head is %d)", h, head)
	}
	b, err := n.fsm.Block(h)
	if err != nil {
		return nil, [32]byte{}, toStatus(fmt.Errorf("block %d: %w", h, err))
	}
	hash := b.Hash()
	return &ledgerv1.BlockResponse{Height: h, Hash: hash[:], Block: ledger.EncodeBlock(b)}, hash, nil
}

// GetBlock returns a block with the cosignatures this node and its peers
// have for it.
func (s *service) GetBlock(ctx context.Context, req *ledgerv1.GetBlockRequest) (*ledgerv1.BlockResponse, error) {
	if _, err := s.n.admitRead(ctx, "get_block"); err != nil {
		return nil, err
	}
	resp, hash, err := s.n.blockResponse(req.Height)
	if err != nil {
		return nil, err
	}
	cps, failures := s.n.cosignatures(ctx, req.Height, hash)
	for i := range cps {
		resp.Cosignatures = append(resp.Cosignatures, client.CheckpointToProto(&cps[i]))
	}
	if int(req.MinCosignatures) > len(cps) {
		why := ""
		if len(failures) > 0 {
			why = "; missing: " + strings.Join(failures, "; ")
		}
		return nil, toStatus(fmt.Errorf("%w: block %d has %d of %d required%s", client.ErrQuorum, req.Height, len(cps), req.MinCosignatures, why))
	}
	return resp, nil
}

// gatherCheckpoints collects valid checkpoints for (h, hash) from this node
// and every other node in the raft configuration that may cosign (see
// mayCosign), sorted by node ID. It also returns why the missing ones are
// missing.
func (n *Node) gatherCheckpoints(ctx context.Context, h uint64, hash [32]byte) ([]client.Checkpoint, []string) {
	var out []client.Checkpoint
	var failures []string
	if n.mayCosign(n.id) {
		own, err := n.checkpoint(h)
		if err != nil {
			return nil, []string{fmt.Sprintf("self: %v", err)}
		}
		out = append(out, own)
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return out, []string{fmt.Sprintf("raft configuration: %v", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, gatherTimeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxFetchParallel)
	for _, srv := range f.Configuration().Servers {
		id := string(srv.ID)
		if id == n.id || !n.mayCosign(id) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-ctx.Done():
				mu.Lock()
				failures = append(failures, fmt.Sprintf("%s: not asked: %v", short(id), ctx.Err()))
				mu.Unlock()
				return
			}
			cp, err := n.fetchCheckpoint(ctx, id, h, hash)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures = append(failures, fmt.Sprintf("%s: %v", short(id), err))
				return
			}
			out = append(out, *cp)
		}()
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	sort.Strings(failures)
	return out, failures
}

// mayCosign reports whether node id's checkpoints count: the genesis
// file's nodes when it lists any, else every node.
func (n *Node) mayCosign(id string) bool {
	if len(n.genesis.Nodes) == 0 {
		return true
	}
	for _, g := range n.genesis.Nodes {
		if ledger.KeyID(g.Key) == id {
			return true
		}
	}
	return false
}

// fetchCheckpoint asks node id for its checkpoint at h and verifies it
// against hash.
func (n *Node) fetchCheckpoint(ctx context.Context, id string, h uint64, hash [32]byte) (*client.Checkpoint, error) {
	c, err := n.peerClient(ctx, id)
	if err != nil {
		return nil, err
	}
	p, err := c.GetCheckpoint(ctx, &ledgerv1.GetCheckpointRequest{Height: h})
	if err != nil {
		return nil, err
	}
	cp, err := client.CheckpointFromProto(p)
	if err != nil {
		return nil, err
	}
	if cp.NodeID != id {
		return nil, fmt.Errorf("%w: answered as node %s", client.ErrBadCheckpoint, short(cp.NodeID))
	}
	if err := cp.VerifyFor(n.genesis.ChainID, h, hash); err != nil {
		n.log.Error("peer checkpoint conflicts with ours", "peer", short(id), "height", h, "err", err)
		return nil, err
	}
	return cp, nil
}

// GetCheckpoint returns this node's checkpoint for a height, waiting (up to
// the call's deadline, at most 5s) for the height to be applied.
func (s *service) GetCheckpoint(ctx context.Context, req *ledgerv1.GetCheckpointRequest) (*ledgerv1.Checkpoint, error) {
	if _, err := s.n.requireNode(ctx, "GetCheckpoint"); err != nil {
		return nil, err
	}
	if head := s.n.fsm.Height(); req.Height > head+maxCheckpointLead {
		return nil, status.Errorf(codes.Unavailable, "height %d not applied here (head %d), and too far ahead to wait for", req.Height, head)
	}
	wctx, cancel := context.WithTimeout(ctx, checkpointWait)
	defer cancel()
	if err := s.n.waitHeight(wctx, req.Height); err != nil {
		return nil, status.Errorf(codes.Unavailable, "height %d not applied here (head %d): %v", req.Height, s.n.fsm.Height(), err)
	}
	cp, err := s.n.checkpoint(req.Height)
	if err != nil {
		return nil, toStatus(err)
	}
	return client.CheckpointToProto(&cp), nil
}

// streamReadBlocks is how many blocks streamed to a non-member count as
// one read of the non-members' shared budget.
const streamReadBlocks = 32

// StreamBlocks sends blocks from a height on, following new ones if asked.
// Without Follow one call sends at most limits.max_range blocks (the
// client asks again from where it stopped); each caller may hold at most
// limits.max_streams streams at once. Opening one is a read (see Query);
// to a caller that is no member, every streamReadBlocks blocks sent wait
// for a token of the non-members' shared read budget.
func (s *service) StreamBlocks(req *ledgerv1.StreamBlocksRequest, stream ledgerv1.Ledger_StreamBlocksServer) error {
	ctx := stream.Context()
	c, err := s.n.admitRead(ctx, "stream_blocks")
	if err != nil {
		return err
	}
	release, err := s.n.limits.openStream(c.name)
	if err != nil {
		s.n.metrics.refused.WithLabelValues("streams").Inc()
		return status.Errorf(codes.ResourceExhausted, "stream blocks: %v", err)
	}
	defer release()
	next, sent := req.FromHeight, 0
	for {
		sig := s.n.blockSignal()
		head := s.n.fsm.Height()
		if !req.Follow && head >= next {
			head = s.n.clampRange(next, head)
		}
		for ; next <= head; next++ {
			if sent++; sent%streamReadBlocks == 0 {
				if err := s.n.paceRead(ctx, c); err != nil {
					return err
				}
			}
			resp, _, err := s.n.blockResponse(next)
			if err != nil {
				return err
			}
			if cp, err := s.n.checkpoint(next); err == nil {
				resp.Cosignatures = []*ledgerv1.Checkpoint{client.CheckpointToProto(&cp)}
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		if !req.Follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return toStatus(ctx.Err())
		case <-s.n.done:
			return status.Error(codes.Unavailable, "node stopping")
		case <-sig:
		}
	}
}

// GetTx returns a committed tx with its inclusion proof.
func (s *service) GetTx(ctx context.Context, req *ledgerv1.GetTxRequest) (*ledgerv1.GetTxResponse, error) {
	if _, err := s.n.admitRead(ctx, "get_tx"); err != nil {
		return nil, err
	}
	if len(req.Hash) != 32 {
		return nil, status.Errorf(codes.InvalidArgument, "tx hash is %d bytes, want 32", len(req.Hash))
	}
	var h [32]byte
	copy(h[:], req.Hash)
	rec, err := s.n.fsm.Tx(h)
	if err != nil {
		return nil, toStatus(fmt.Errorf("tx %x: %w", h, err))
	}
	return &ledgerv1.GetTxResponse{
		Height:   rec.Height,
		Index:    rec.Index,
		Envelope: rec.Envelope,
		Proof:    rec.Proof,
		TreeSize: rec.TreeSize,
		TxRoot:   rec.TxRoot[:],
	}, nil
}

// Query reads one record of ledger state as JSON.
//
// Each caller is held to limits.query_rate, and callers that are not
// members share limits.non_member_query_rate (ResourceExhausted beyond).
func (s *service) Query(ctx context.Context, req *ledgerv1.QueryRequest) (*ledgerv1.QueryResponse, error) {
	if _, err := s.n.admitRead(ctx, "query"); err != nil {
		return nil, err
	}
	f := s.n.fsm
	if err := s.n.waitMinHeight(ctx, req.MinHeight); err != nil {
		return nil, err
	}
	height := f.Height()
	var v any
	var err error
	switch req.Kind {
	case ledgerv1.QueryKind_QUERY_KIND_MEMBER:
		v, err = f.Member(req.Key)
	case ledgerv1.QueryKind_QUERY_KIND_MODEL:
		v, err = f.Model(req.Key)
	case ledgerv1.QueryKind_QUERY_KIND_DATASET:
		v, err = f.Dataset(req.Key)
	case ledgerv1.QueryKind_QUERY_KIND_ROUND:
		v, err = f.Round(req.Key, req.Round)
	case ledgerv1.QueryKind_QUERY_KIND_LINEAGE:
		v, err = f.Lineage(req.Key)
	case ledgerv1.QueryKind_QUERY_KIND_NONCE:
		v, err = f.Nonce(req.Key)
	case ledgerv1.QueryKind_QUERY_KIND_JOB:
		v, err = f.Job(req.Key)
	case ledgerv1.QueryKind_QUERY_KIND_UPDATES_BY_DIGEST:
		v, err = f.UpdatesByDigest(req.Key)
	case ledgerv1.QueryKind_QUERY_KIND_SUSPENSIONS:
		v, err = f.Suspensions(req.Key)
	case ledgerv1.QueryKind_QUERY_KIND_PUBLISHED_DATASETS:
		limit := int(req.Limit)
		if limit == 0 {
			limit = DefaultPageSize
		}
		v, err = f.PublishedDatasets(req.After, min(limit, s.n.limits.cfg.MaxRange), MaxPageBytes)
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown query kind %v", req.Kind)
	}
	if err != nil {
		return nil, toStatus(fmt.Errorf("%s %q: %w", queryName(req.Kind), req.Key, err))
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, toStatus(err)
	}
	return &ledgerv1.QueryResponse{Json: data, Height: height}, nil
}

// DefaultPageSize is the entries of a listing query's page when the
// request gives no limit; a request's limit is capped at limits.max_range.
// MaxPageBytes bounds the manifests one page carries (it always holds at
// least one entry).
const (
	DefaultPageSize = 64
	MaxPageBytes    = 1 << 20
)

// MaxQueryWait bounds how long a Query with a min_height waits for this
// node to apply that height; MaxQueryLead bounds how far ahead of this
// node's head a min_height may be for the node to wait at all.
const (
	MaxQueryWait = 10 * time.Second
	MaxQueryLead = 1 << 20
)

// waitMinHeight waits until the node has applied height h (0: at once),
// up to ctx's deadline and MaxQueryWait; else Unavailable, naming both.
func (n *Node) waitMinHeight(ctx context.Context, h uint64) error {
	head := n.fsm.Height()
	if h <= head {
		return nil
	}
	if h > head+MaxQueryLead {
		return status.Errorf(codes.Unavailable, "query: min height %d is too far ahead of this node's head %d to wait for", h, head)
	}
	wctx, cancel := context.WithTimeout(ctx, MaxQueryWait)
	defer cancel()
	if err := n.waitHeight(wctx, h); err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Errorf(codes.Unavailable, "query: this node has not applied min height %d (head %d) within %s: %v", h, n.fsm.Height(), MaxQueryWait, err)
	}
	return nil
}

func queryName(k ledgerv1.QueryKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "QUERY_KIND_"))
}

// Status describes this node and the cluster as it sees it.
func (s *service) Status(ctx context.Context, _ *ledgerv1.StatusRequest) (*ledgerv1.StatusResponse, error) {
	if _, err := s.n.admitRead(ctx, "status"); err != nil {
		return nil, err
	}
	return s.n.status()
}

func (n *Node) status() (*ledgerv1.StatusResponse, error) {
	r := n.raft
	stats := r.Stats()
	term, _ := strconv.ParseUint(stats["term"], 10, 64)
	_, leader := r.LeaderWithID()
	head := n.fsm.Height()
	resp := &ledgerv1.StatusResponse{
		NodeId:       n.id,
		ChainId:      n.genesis.ChainID,
		State:        r.State().String(),
		LeaderId:     string(leader),
		Term:         term,
		Height:       head,
		AppliedIndex: r.AppliedIndex(),
		CommitIndex:  r.CommitIndex(),
		GrpcAddress:  n.GRPCAddr(),
		RaftAddress:  n.RaftAddr(),
	}
	if b, err := n.fsm.Block(head); err == nil {
		h := b.Hash()
		resp.LastBlockHash = h[:]
	}
	if p, ok := n.peers.get(string(leader)); ok {
		resp.LeaderGrpcAddress = p.GRPCAddress
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, toStatus(err)
	}
	for _, srv := range f.Configuration().Servers {
		p, _ := n.peers.get(string(srv.ID))
		p.ID, p.RaftAddress = string(srv.ID), string(srv.Address)
		suf := "voter"
		if srv.Suffrage != raft.Voter {
			suf = "nonvoter"
		}
		resp.Peers = append(resp.Peers, peerToProto(peerEntry{PeerConfig: p}, suf))
	}
	return resp, nil
}

// errMembershipByTx answers the Join and Remove RPCs, which no longer
// change raft's configuration.
var errMembershipByTx = status.Error(codes.FailedPrecondition,
	"raft membership changes only through admin-signed ledger txs: NodeAdded, NodePromoted, NodeRemoved "+
		"(fedtune ledger join|promote|remove --key ADMIN.key); the leader then carries them out")

// Join is refused: see errMembershipByTx.
func (s *service) Join(ctx context.Context, req *ledgerv1.JoinRequest) (*ledgerv1.JoinResponse, error) {
	s.n.metrics.refused.WithLabelValues("membership_rpc").Inc()
	return nil, errMembershipByTx
}

// Remove is refused: see errMembershipByTx.
func (s *service) Remove(ctx context.Context, req *ledgerv1.RemoveRequest) (*ledgerv1.RemoveResponse, error) {
	s.n.metrics.refused.WithLabelValues("membership_rpc").Inc()
	return nil, errMembershipByTx
}

// Peers merges the caller's entry and returns the signed entries of the
// directory. Only ledger nodes may call it, and the entry must be signed by
// the node it describes.
func (s *service) Peers(ctx context.Context, req *ledgerv1.PeersRequest) (*ledgerv1.PeersResponse, error) {
	caller, err := s.n.requireNode(ctx, "Peers")
	if err != nil {
		return nil, err
	}
	if p := peerFromProto(req.Self); p.ID != "" {
		if err := s.n.peers.putSigned(p); errors.Is(err, ErrBadPeer) {
			s.n.log.Warn("refused a peer directory entry", "caller", short(caller), "err", err)
			return nil, status.Errorf(codes.InvalidArgument, "peers: %v", err)
		} else if err != nil {
			return nil, toStatus(err)
		}
	}
	resp := &ledgerv1.PeersResponse{}
	for _, p := range s.n.peers.list() {
		if p.signed() {
			resp.Peers = append(resp.Peers, peerToProto(p, ""))
		}
	}
	return resp, nil
}
