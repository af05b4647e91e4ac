package node

import (
	"context"
	"time"

	"github.com/hashicorp/raft"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/ledger"
)

// reconcileEvery is how often a leader compares raft's configuration with
// the FSM's node records.
const reconcileEvery = 300 * time.Millisecond

// membershipLoop runs on every node. Every reconcileEvery it closes the
// inbound raft connections of peers that are no longer voting nodes
// (pruneRaftConns); while it leads, it makes raft's configuration follow
// the ledger's node records (see reconcile), right after it becomes leader
// and then every reconcileEvery, so that a change applied by a leader that
// lost leadership before carrying it out is carried out by the next one.
func (n *Node) membershipLoop(ctx context.Context) {
	t := time.NewTicker(reconcileEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.pruneRaftConns()
		if n.raft.State() == raft.Leader {
			n.reconcile()
		}
	}
}

// reconcile carries out the FSM's node records in raft's configuration on
// the leader, idempotently: an added node becomes a non-voter
// (AddNonvoter), a promoted one a voter (AddVoter), a removed one leaves
// (RemoveServer). When the genesis pins the nodes, a server that is no
// node of the ledger at all is removed too, and a leader that is not a
// voting node itself hands leadership on (its proposals would be refused).
// Genesis nodes are bootstrapped from the node configs and are left as
// they are until removed. Raft membership never changes any other way.
func (n *Node) reconcile() {
	nodes, err := n.fsm.Nodes()
	if err != nil {
		n.log.Error("membership: read node records", "err", err)
		return
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return
	}
	servers := map[string]raft.Server{}
	for _, s := range cf.Configuration().Servers {
		servers[string(s.ID)] = s
	}
	known := map[string]ledger.NodeRecord{}
	for _, r := range nodes {
		known[r.ID] = r
	}
	pinned := n.fsm.NodesPinned()
	if self, ok := known[n.id]; (pinned && !ok) || (ok && !self.IsVoter()) {
		n.log.Warn("membership: this node is not a voting ledger node (its proposals are refused); handing leadership on")
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			n.log.Warn("membership: leadership transfer", "err", err)
		}
		return
	}
	const timeout = 10 * time.Second
	for _, r := range nodes {
		s, present := servers[r.ID]
		id := raft.ServerID(r.ID)
		switch {
		case r.Removed:
			if present && r.ID != n.id {
				n.apply("remove", r.ID, n.raft.RemoveServer(id, 0, timeout))
			}
		case r.Genesis:
		case r.Voter:
			if !present || s.Suffrage != raft.Voter {
				addr := raft.ServerAddress(r.RaftAddress)
				if present {
					addr = s.Address
				}
				n.apply("promote to voter", r.ID, n.raft.AddVoter(id, addr, 0, timeout))
			}
		default:
			if !present {
				if n.apply("add as non-voter", r.ID, n.raft.AddNonvoter(id, raft.ServerAddress(r.RaftAddress), 0, timeout)) {
					// Tell the new node where this (leader) node's gRPC
					// service is; it learns the others from here (Peers).
					if err := n.peers.putHint(PeerConfig{ID: r.ID, RaftAddress: r.RaftAddress, GRPCAddress: r.GRPCAddress}); err == nil {
						go n.announceTo(r.ID)
					}
				}
			}
		}
	}
	if !pinned {
		return
	}
	for id := range servers {
		if _, ok := known[id]; !ok && id != n.id {
			n.log.Warn("membership: raft server is no ledger node of this chain; removing it", "peer", short(id))
			n.apply("remove unknown server", id, n.raft.RemoveServer(raft.ServerID(id), 0, timeout))
		}
	}
}

// pruneRaftConns closes the inbound raft connections of every peer that
// is no longer a voting ledger node (a NodeRemoved applied here since its
// handshake): the TLS handshake checked it once, and raft would keep
// reading the connection for as long as the peer holds it open.
func (n *Node) pruneRaftConns() {
	if n.stream == nil {
		return
	}
	for _, id := range n.stream.prune(n.isVoter) {
		n.metrics.refused.WithLabelValues("raft_conn_closed").Inc()
		n.log.Warn("membership: closed a raft connection of a peer that is no longer a voting ledger node", "peer", short(id))
	}
}

func (n *Node) apply(what, id string, f raft.IndexFuture) bool {
	if err := f.Error(); err != nil {
		n.log.Warn("membership: "+what+" failed; will retry", "peer", short(id), "err", err)
		return false
	}
	n.log.Info("membership: "+what, "peer", short(id), "index", f.Index())
	return true
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
			if _, err = c.Peers(ctx, &ledgerv1.PeersRequest{Self: peerToProto(n.selfEntry(), "")}); err == nil {
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	n.log.Warn("could not announce to the added node", "peer", short(id), "err", err)
}
