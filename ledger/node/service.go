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
	if len(req.Txs) == 0 {
		return &ledgerv1.SubmitResponse{}, nil
	}
	for {
		results, err := s.n.submitLocal(ctx, req.Txs)
		if err == nil {
			return &ledgerv1.SubmitResponse{Results: results}, nil
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
		results, err = s.n.forward(ctx, c, req.Txs, req.Hops+1)
		if err != nil {
			return nil, err
		}
		return &ledgerv1.SubmitResponse{Results: results}, nil
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
	case errors.Is(err, ErrNoLeader), errors.Is(err, ErrStopped):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, ErrQuorum):
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
	resp, hash, err := s.n.blockResponse(req.Height)
	if err != nil {
		return nil, err
	}
	cps, failures := s.n.gatherCheckpoints(ctx, req.Height, hash)
	for i := range cps {
		resp.Cosignatures = append(resp.Cosignatures, CheckpointToProto(&cps[i]))
	}
	if int(req.MinCosignatures) > len(cps) {
		why := ""
		if len(failures) > 0 {
			why = "; missing: " + strings.Join(failures, "; ")
		}
		return nil, toStatus(fmt.Errorf("%w: block %d has %d of %d required%s", ErrQuorum, req.Height, len(cps), req.MinCosignatures, why))
	}
	return resp, nil
}

// gatherCheckpoints collects valid checkpoints for (h, hash) from this node
// and every other node in the raft configuration that may cosign (see
// mayCosign), sorted by node ID. It also returns why the missing ones are
// missing.
func (n *Node) gatherCheckpoints(ctx context.Context, h uint64, hash [32]byte) ([]Checkpoint, []string) {
	var out []Checkpoint
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
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, srv := range f.Configuration().Servers {
		id := string(srv.ID)
		if id == n.id || !n.mayCosign(id) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
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
func (n *Node) fetchCheckpoint(ctx context.Context, id string, h uint64, hash [32]byte) (*Checkpoint, error) {
	c, err := n.peerClient(ctx, id)
	if err != nil {
		return nil, err
	}
	p, err := c.GetCheckpoint(ctx, &ledgerv1.GetCheckpointRequest{Height: h})
	if err != nil {
		return nil, err
	}
	cp, err := CheckpointFromProto(p)
	if err != nil {
		return nil, err
	}
	if cp.NodeID != id {
		return nil, fmt.Errorf("%w: answered as node %s", ErrBadCheckpoint, short(cp.NodeID))
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
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.n.waitHeight(wctx, req.Height); err != nil {
		return nil, status.Errorf(codes.Unavailable, "height %d not applied here (head %d): %v", req.Height, s.n.fsm.Height(), err)
	}
	cp, err := s.n.checkpoint(req.Height)
	if err != nil {
		return nil, toStatus(err)
	}
	return CheckpointToProto(&cp), nil
}

// StreamBlocks sends blocks from a height on, following new ones if asked.
func (s *service) StreamBlocks(req *ledgerv1.StreamBlocksRequest, stream ledgerv1.Ledger_StreamBlocksServer) error {
	ctx := stream.Context()
	next := req.FromHeight
	for {
		sig := s.n.blockSignal()
		head := s.n.fsm.Height()
		for ; next <= head; next++ {
			resp, _, err := s.n.blockResponse(next)
			if err != nil {
				return err
			}
			if cp, err := s.n.checkpoint(next); err == nil {
				resp.Cosignatures = []*ledgerv1.Checkpoint{CheckpointToProto(&cp)}
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
func (s *service) Query(ctx context.Context, req *ledgerv1.QueryRequest) (*ledgerv1.QueryResponse, error) {
	f := s.n.fsm
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
	case ledgerv1.QueryKind_QUERY_KIND_UPDATES_BY_DIGEST:
		v, err = f.UpdatesByDigest(req.Key)
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

func queryName(k ledgerv1.QueryKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "QUERY_KIND_"))
}

// Status describes this node and the cluster as it sees it.
func (s *service) Status(ctx context.Context, _ *ledgerv1.StatusRequest) (*ledgerv1.StatusResponse, error) {
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
		resp.Peers = append(resp.Peers, peerToProto(p, suf))
	}
	return resp, nil
}

// Join adds a node as a non-voter and, if asked, promotes it once caught up.
func (s *service) Join(ctx context.Context, req *ledgerv1.JoinRequest) (*ledgerv1.JoinResponse, error) {
	if !isNodeID(req.NodeId) || req.RaftAddress == "" || req.GrpcAddress == "" {
		return nil, status.Error(codes.InvalidArgument, "join needs node_id (64 hex), raft_address and grpc_address")
	}
	var idx uint64
	err := s.n.onLeader(ctx, req.Hops, func() (err error) {
		idx, err = s.n.join(ctx, PeerConfig{ID: req.NodeId, RaftAddress: req.RaftAddress, GRPCAddress: req.GrpcAddress}, req.Voter)
		return err
	}, func(c ledgerv1.LedgerClient) error {
		resp, err := c.Join(ctx, &ledgerv1.JoinRequest{NodeId: req.NodeId, RaftAddress: req.RaftAddress, GrpcAddress: req.GrpcAddress, Voter: req.Voter, Hops: req.Hops + 1})
		if err == nil {
			idx = resp.Index
		}
		return err
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &ledgerv1.JoinResponse{Index: idx}, nil
}

// join runs on the leader: AddNonvoter, then (for voters) wait for the node
// to catch up and AddVoter.
func (n *Node) join(ctx context.Context, p PeerConfig, voter bool) (uint64, error) {
	if err := n.peers.put(p); err != nil {
		return 0, err
	}
	// Tell the new node where this (leader) node's gRPC service is; it
	// learns the other nodes' addresses from here through Peers.
	go n.announceTo(p.ID)
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return 0, err
	}
	var current *raft.Server
	for _, srv := range cf.Configuration().Servers {
		if string(srv.ID) == p.ID {
			srv := srv
			current = &srv
		}
	}
	if current != nil && current.Suffrage == raft.Voter {
		return cf.Index(), nil // already a voter
	}
	var idx uint64
	if current == nil {
		f := n.raft.AddNonvoter(raft.ServerID(p.ID), raft.ServerAddress(p.RaftAddress), 0, 30*time.Second)
		if err := f.Error(); err != nil {
			return 0, fmt.Errorf("add non-voter %s: %w", short(p.ID), err)
		}
		idx = f.Index()
		n.log.Info("added non-voter", "peer", short(p.ID), "raft", p.RaftAddress)
	}
	if !voter {
		return idx, nil
	}
	target := n.raft.AppliedIndex()
	if err := n.waitCaughtUp(ctx, p.ID, target); err != nil {
		return idx, fmt.Errorf("promote %s: %w", short(p.ID), err)
	}
	f := n.raft.AddVoter(raft.ServerID(p.ID), raft.ServerAddress(p.RaftAddress), 0, 30*time.Second)
	if err := f.Error(); err != nil {
		return idx, fmt.Errorf("promote %s to voter: %w", short(p.ID), err)
	}
	n.log.Info("promoted to voter", "peer", short(p.ID))
	return f.Index(), nil
}

// announceTo sends this node's directory entry to node id, retrying for
// up to a minute while that node is not yet reachable.
func (n *Node) announceTo(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() {
		select {
		case <-n.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var err error
	for ctx.Err() == nil {
		var c ledgerv1.LedgerClient
		if c, err = n.peerClient(ctx, id); err == nil {
			if _, err = c.Peers(ctx, &ledgerv1.PeersRequest{Self: peerToProto(n.self(), "")}); err == nil {
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	n.log.Warn("could not announce to joining node", "peer", short(id), "err", err)
}

// waitCaughtUp polls node id's Status until it has applied index target.
func (n *Node) waitCaughtUp(ctx context.Context, id string, target uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last error
	lastLog := time.Now()
	for {
		if time.Since(lastLog) > 5*time.Second {
			n.log.Info("waiting for new node to catch up before promotion", "peer", short(id), "target_index", target, "status", last)
			lastLog = time.Now()
		}
		c, err := n.peerClient(ctx, id)
		if err == nil {
			var st *ledgerv1.StatusResponse
			if st, err = c.Status(ctx, &ledgerv1.StatusRequest{}); err == nil {
				if st.AppliedIndex >= target {
					return nil
				}
				err = fmt.Errorf("applied index %d of %d", st.AppliedIndex, target)
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("not caught up: %w (%v)", ctx.Err(), last)
		case <-n.done:
			return ErrStopped
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Remove takes a node out of the raft configuration.
func (s *service) Remove(ctx context.Context, req *ledgerv1.RemoveRequest) (*ledgerv1.RemoveResponse, error) {
	if !isNodeID(req.NodeId) {
		return nil, status.Errorf(codes.InvalidArgument, "remove: node_id %q is not 64 hex characters", req.NodeId)
	}
	var idx uint64
	err := s.n.onLeader(ctx, req.Hops, func() error {
		f := s.n.raft.RemoveServer(raft.ServerID(req.NodeId), 0, 30*time.Second)
		if err := f.Error(); err != nil {
			return fmt.Errorf("remove %s: %w", short(req.NodeId), err)
		}
		idx = f.Index()
		s.n.log.Info("removed node", "peer", short(req.NodeId))
		return nil
	}, func(c ledgerv1.LedgerClient) error {
		resp, err := c.Remove(ctx, &ledgerv1.RemoveRequest{NodeId: req.NodeId, Hops: req.Hops + 1})
		if err == nil {
			idx = resp.Index
		}
		return err
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &ledgerv1.RemoveResponse{Index: idx}, nil
}

// onLeader runs local when this node leads, or forward with a client for
// the leader otherwise. A local call that fails because leadership moved
// is tried again (locally or forwarded) for a while.
func (n *Node) onLeader(ctx context.Context, hops uint32, local func() error, forward func(ledgerv1.LedgerClient) error) error {
	deadline := time.Now().Add(n.cfg.Raft.ElectionTimeout*10 + 5*time.Second)
	for {
		if n.raft.State() == raft.Leader {
			err := local()
			if err == nil || !leadershipMoved(err) || time.Now().After(deadline) {
				return err
			}
		} else {
			if hops >= maxHops {
				return status.Errorf(codes.Unavailable, "not the leader after %d forwards", hops)
			}
			c, err := n.leaderClient(ctx)
			if err != nil {
				return err
			}
			if c != nil {
				return forward(c)
			}
			continue // became leader meanwhile
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.done:
			return ErrStopped
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// leadershipMoved reports whether err means raft leadership changed under
// a call, so that trying again on the new leader is right.
func leadershipMoved(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
		errors.Is(err, raft.ErrLeadershipTransferInProgress)
}

// Peers merges the caller's entry and returns the directory.
func (s *service) Peers(ctx context.Context, req *ledgerv1.PeersRequest) (*ledgerv1.PeersResponse, error) {
	if p := peerFromProto(req.Self); p.ID != "" {
		if !isNodeID(p.ID) {
			return nil, status.Errorf(codes.InvalidArgument, "peers: node_id %q is not 64 hex characters", p.ID)
		}
		if err := s.n.peers.put(p); err != nil {
			return nil, toStatus(err)
		}
	}
	resp := &ledgerv1.PeersResponse{}
	for _, p := range s.n.peers.list() {
		resp.Peers = append(resp.Peers, peerToProto(p, ""))
	}
	return resp, nil
}
