package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedtune/fedtune/internal/tlsid"
)

// handshakeTimeout bounds a raft TLS handshake, so that a connection that
// never completes one does not hold its goroutine.
const handshakeTimeout = 10 * time.Second

// isNode reports whether the key with ID id belongs to a ledger node: one
// that may take part in raft, call the node-to-node RPCs (forwarded
// Submits, GetCheckpoint, Peers) and cosign checkpoints. This is the one
// place that decides it: a node of the chain as this node's ledger state
// knows it (fsm.FSM.NodeMember: the genesis file's nodes and those an
// admin added with NodeAdded), and not removed since (NodeRemoved). A node
// still catching up may not yet know of a node added later; that node's
// connections are refused until this one applies its NodeAdded. A genesis
// that lists no nodes pins nothing, and every key counts (New refuses such
// a chain unless the config sets allow_unpinned).
func (n *Node) isNode(id string) bool {
	if len(n.genesis.Nodes) == 0 {
		return true
	}
	if _, ok := n.genesisNodes[id]; ok && n.fsm == nil {
		return true
	}
	if n.fsm == nil {
		return false
	}
	r, ok := n.fsm.NodeMember(id)
	return ok && r.Current()
}

// nodeVerifier is the tlsid.Verifier that accepts ledger nodes only.
func (n *Node) nodeVerifier() tlsid.Verifier {
	return func(id string) error {
		if !n.isNode(id) {
			return fmt.Errorf("key %s is not a ledger node of chain %s", short(id), n.genesis.ChainID)
		}
		return nil
	}
}

// peerVerifier accepts exactly node id, and only while it is a ledger node:
// a directory entry that sends this node to another key's address fails
// the handshake.
func (n *Node) peerVerifier(id string) tlsid.Verifier {
	expect := tlsid.ExpectID(id)
	return func(got string) error {
		if err := expect(got); err != nil {
			return err
		}
		return n.nodeVerifier()(got)
	}
}

// requireNode returns the key ID of the caller of a node-to-node RPC, or
// a PermissionDenied status naming the RPC when the caller did not prove a
// ledger node's key.
func (n *Node) requireNode(ctx context.Context, rpc string) (string, error) {
	id, err := tlsid.PeerID(ctx)
	if err != nil {
		return "", status.Errorf(codes.PermissionDenied, "%s is for ledger nodes only: %v", rpc, err)
	}
	if !n.isNode(id) {
		return "", status.Errorf(codes.PermissionDenied, "%s is for ledger nodes only: caller %s is not a ledger node of chain %s", rpc, short(id), n.genesis.ChainID)
	}
	return id, nil
}

// isVoter reports whether the key with ID id belongs to a voting ledger
// node: a genesis node or a promoted one, not removed. Only voters open
// raft connections (a leader or a candidate dials; a non-voter only
// answers the leader's calls), so a raft server accepts no other caller.
// A genesis that lists no nodes pins nothing (see isNode).
func (n *Node) isVoter(id string) bool {
	if len(n.genesis.Nodes) == 0 {
		return n.isNode(id)
	}
	if _, ok := n.genesisNodes[id]; ok && n.fsm == nil {
		return true
	}
	if n.fsm == nil {
		return false
	}
	r, ok := n.fsm.NodeMember(id)
	return ok && r.IsVoter()
}

// voterVerifier is the tlsid.Verifier of inbound raft connections: voting
// ledger nodes only.
func (n *Node) voterVerifier() tlsid.Verifier {
	return func(id string) error {
		if !n.isNode(id) {
			return fmt.Errorf("key %s is not a ledger node of chain %s", short(id), n.genesis.ChainID)
		}
		if !n.isVoter(id) {
			return fmt.Errorf("key %s is not a voting ledger node of chain %s: only voters open raft connections", short(id), n.genesis.ChainID)
		}
		return nil
	}
}

// tlsStreamLayer is raft's transport over mutual TLS 1.3: both ends present
// the certificate of their node key (tlsid). The server side accepts only
// a voting ledger node (isVoter), the client side only a ledger node
// (isNode: the leader dials non-voters too). Anything else, plain TCP
// included, fails the handshake before raft reads a byte. Accepted
// connections are tracked per peer, and prune closes those of a peer that
// is no longer a voter (removed by a NodeRemoved): raft keeps inbound
// connections open, so the handshake's check alone would not end them.
type tlsStreamLayer struct {
	net.Listener
	server *tls.Config
	client *tls.Config

	mu    sync.Mutex
	conns map[*handshakeConn]string // accepted, handshake done: peer ID
}

var _ raft.StreamLayer = (*tlsStreamLayer)(nil)

// newTLSStreamLayer wraps the raft listener ln for node n.
func (n *Node) newTLSStreamLayer(ln net.Listener) (*tlsStreamLayer, error) {
	srv, err := tlsid.ServerConfig(n.key, n.voterVerifier())
	if err != nil {
		return nil, fmt.Errorf("raft TLS: %w", err)
	}
	cli, err := tlsid.ClientConfig(n.key, n.nodeVerifier())
	if err != nil {
		return nil, fmt.Errorf("raft TLS: %w", err)
	}
	return &tlsStreamLayer{Listener: ln, server: srv, client: cli, conns: map[*handshakeConn]string{}}, nil
}

// Accept returns the next connection, as TLS. The handshake runs on the
// connection's first read or write (on raft's goroutine for that
// connection, not in the accept loop), within handshakeTimeout.
func (s *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &handshakeConn{Conn: tls.Server(c, s.server), layer: s}, nil
}

// track records an accepted connection whose handshake proved peer id.
func (s *tlsStreamLayer) track(c *handshakeConn, id string) {
	s.mu.Lock()
	s.conns[c] = id
	s.mu.Unlock()
}

func (s *tlsStreamLayer) untrack(c *handshakeConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// prune closes every accepted connection whose peer keep refuses, and
// returns the IDs of the peers it cut off.
func (s *tlsStreamLayer) prune(keep func(id string) bool) []string {
	s.mu.Lock()
	var drop []*handshakeConn
	var ids []string
	for c, id := range s.conns {
		if !keep(id) {
			drop = append(drop, c)
			ids = append(ids, id)
			delete(s.conns, c)
		}
	}
	s.mu.Unlock()
	for _, c := range drop {
		_ = c.Conn.Close()
	}
	return ids
}

// peerConns counts the tracked inbound connections of peer id.
func (s *tlsStreamLayer) peerConns(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := 0
	for _, p := range s.conns {
		if p == id {
			k++
		}
	}
	return k
}

// Dial opens a TLS connection to a raft peer and completes the handshake,
// which verifies that the peer is a ledger node.
func (s *tlsStreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.client}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", string(addr))
	if err != nil {
		return nil, fmt.Errorf("raft dial %s: %w", addr, err)
	}
	return c, nil
}

// handshakeConn is a server-side TLS connection whose handshake runs, with
// a deadline, before its first read or write; once it succeeds, the
// connection is tracked by its layer until closed.
type handshakeConn struct {
	*tls.Conn
	layer *tlsStreamLayer
	once  sync.Once
	err   error
}

func (c *handshakeConn) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		if err := c.Conn.HandshakeContext(ctx); err != nil {
			c.err = fmt.Errorf("raft TLS handshake with %v: %w", c.RemoteAddr(), err)
			_ = c.Conn.Close()
			return
		}
		st := c.Conn.ConnectionState()
		if len(st.PeerCertificates) == 0 {
			c.err = fmt.Errorf("raft TLS handshake with %v: no client certificate", c.RemoteAddr())
			_ = c.Conn.Close()
			return
		}
		id, err := tlsid.IDFromCert(st.PeerCertificates[0])
		if err != nil {
			c.err = fmt.Errorf("raft TLS handshake with %v: %w", c.RemoteAddr(), err)
			_ = c.Conn.Close()
			return
		}
		if c.layer != nil {
			c.layer.track(c, id)
		}
	})
	return c.err
}

func (c *handshakeConn) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *handshakeConn) Write(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// Close closes the connection and stops tracking it.
func (c *handshakeConn) Close() error {
	if c.layer != nil {
		c.layer.untrack(c)
	}
	return c.Conn.Close()
}

// errNotNode is wrapped when a directory entry names a key that is not a
// ledger node.
var errNotNode = errors.New("not a ledger node")

// short abbreviates a node ID for messages.
func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
