package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

// MaxMsgSize bounds gRPC messages both ways, for ledger clients and nodes:
// a block (MaxBlockBytes, 8 MiB by default) plus its cosignatures must fit,
// where gRPC's default is 4 MiB.
const MaxMsgSize = 64 << 20

// CallSizes raises a client connection's message limits to MaxMsgSize.
var CallSizes = grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize), grpc.MaxCallSendMsgSize(MaxMsgSize))

// Client talks to one ledger node's gRPC service. It verifies what it can:
// block hashes, cosignatures and inclusion proofs.
type Client struct {
	cc  *grpc.ClientConn
	api ledgerv1.LedgerClient
	pin *Pin // nil: unpinned (DialPinned)
	// refused is why the last TLS handshake refused the server's key (an
	// error wrapping tlsid.ErrNotAllowed), nil after one that accepted it.
	refused atomic.Pointer[error]
}

// Dial returns a client for the node at addr (host:port) over TLS 1.3
// (internal/tlsid): the client presents key's certificate, and the server
// must prove a key that allow accepts; nil accepts any key (the connection
// is encrypted, and what the client reads is still checked: hashes,
// inclusion proofs, cosignatures). Use tlsid.AllowIDs with the ledger's
// node IDs to pin the server, or DialPinned with the chain's genesis file,
// which also makes SubmitWait require node cosignatures. Ledger nodes
// serve TLS only. Extra options (a context dialer, say) are appended.
func Dial(ctx context.Context, addr string, key ed25519.PrivateKey, allow tlsid.Verifier, opts ...grpc.DialOption) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if key == nil {
		return nil, fmt.Errorf("dial ledger node %s: no key for TLS (ledger nodes serve TLS only)", addr)
	}
	if allow == nil {
		allow = tlsid.AllowAny()
	}
	c := &Client{}
	verify := func(id string) error {
		if err := allow(id); err != nil {
			refused := fmt.Errorf("%w: ledger node %s at %s: %v", tlsid.ErrNotAllowed, id, addr, err)
			c.refused.Store(&refused)
			return err
		}
		c.refused.Store(nil)
		return nil
	}
	creds, err := tlsid.DialOption(key, verify)
	if err != nil {
		return nil, fmt.Errorf("dial ledger node %s: %w", addr, err)
	}
	dopts := append([]grpc.DialOption{creds, CallSizes, grpc.WithChainUnaryInterceptor(paceReads)}, opts...)
	cc, err := grpc.NewClient(addr, dopts...)
	if err != nil {
		return nil, fmt.Errorf("dial ledger node %s: %w", addr, err)
	}
	c.cc, c.api = cc, ledgerv1.NewLedgerClient(cc)
	return c, nil
}

// readMethods are the unary RPCs a node rate-limits as reads.
var readMethods = map[string]bool{
	ledgerv1.Ledger_Query_FullMethodName:    true,
	ledgerv1.Ledger_GetBlock_FullMethodName: true,
	ledgerv1.Ledger_GetTx_FullMethodName:    true,
	ledgerv1.Ledger_Status_FullMethodName:   true,
}

// maxReadWait bounds how long one read waits out a node's read rate limit.
const maxReadWait = 30 * time.Second

// paceReads asks again, after a growing pause, a read the node refused
// with ResourceExhausted (its per-caller read rate: "slow down and
// retry"), for up to maxReadWait or until ctx ends; then it returns the
// refusal.
func paceReads(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if !readMethods[method] {
		return err
	}
	deadline := time.Now().Add(maxReadWait)
	for wait := 20 * time.Millisecond; status.Code(err) == codes.ResourceExhausted && time.Now().Before(deadline); wait = min(2*wait, time.Second) {
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		err = invoker(ctx, method, req, reply, cc, opts...)
	}
	return err
}

// Close closes the connection.
func (c *Client) Close() error { return c.cc.Close() }

// API returns the raw generated client.
func (c *Client) API() ledgerv1.LedgerClient { return c.api }

// Submit sends envelopes and returns one result per envelope. A rejected
// result's typed error is Rejection(result).
func (c *Client) Submit(ctx context.Context, txs ...[]byte) ([]*ledgerv1.TxResult, error) {
	resp, err := c.api.Submit(ctx, &ledgerv1.SubmitRequest{Txs: txs})
	if err != nil {
		return nil, c.typed(err)
	}
	if len(resp.Results) != len(txs) {
		return nil, fmt.Errorf("submit: %d results for %d txs", len(resp.Results), len(txs))
	}
	return resp.Results, nil
}

// ErrUnproven is wrapped by SubmitWait's error when the node said a tx was
// committed but could not show it in its chain with a valid inclusion
// proof.
var ErrUnproven = errors.New("ledger node: commit not proven")

// proofWait bounds how long SubmitWait waits for the node it talks to
// (a follower may lag the leader that answered) to serve the block of a
// tx said to be committed.
const proofWait = 10 * time.Second

// SubmitWait submits one tx and resubmits it while its fate is unknown or
// no leader answers, until it is committed (returning its height) or
// rejected (a *RejectedError: errors.Is(err, ErrRejected), and errors.As
// gives the ledger's *ledger.TxError, so errors.Is(err, ledger.ErrBadNonce)
// tests its code), or ctx ends. Resubmitting is safe: the ledger deduplicates txs by hash.
//
// A commit counts only once proven: the tx is fetched with its Merkle
// inclusion proof, which must verify against the tx root of the block at
// the height the node named, and that block must hold the tx at the
// proof's index (VerifyCommitted). A pinned client (DialPinned) also
// requires that block to carry the genesis quorum of checkpoint
// cosignatures from pinned nodes: one server alone cannot make up a
// commit. A node that claims a commit it cannot prove gives an error
// wrapping ErrUnproven.
//
// A server whose TLS key the client's verifier refuses ends SubmitWait at
// once (tlsid.ErrNotAllowed in the message) instead of being retried.
func (c *Client) SubmitWait(ctx context.Context, tx []byte) (uint64, error) {
	h, err := c.submitUntilFate(ctx, tx)
	if err != nil {
		return 0, err
	}
	if err := c.VerifyCommitted(ctx, tx, h); err != nil {
		return 0, err
	}
	return h, nil
}

// submitUntilFate is SubmitWait without the proof: the height the node
// says the tx was committed at.
func (c *Client) submitUntilFate(ctx context.Context, tx []byte) (uint64, error) {
	var last string
	for {
		rs, err := c.Submit(ctx, tx)
		switch {
		case err == nil && rs[0].Status == ledgerv1.TxStatus_TX_STATUS_COMMITTED:
			return rs[0].Height, nil
		case err == nil && rs[0].Status == ledgerv1.TxStatus_TX_STATUS_REJECTED:
			return 0, Rejection(rs[0])
		case err == nil:
			last = rs[0].Reason
		case status.Code(err) == codes.Unavailable && errors.Is(err, tlsid.ErrNotAllowed):
			return 0, fmt.Errorf("submit: %w", err)
		case status.Code(err) == codes.Unavailable || status.Code(err) == codes.DeadlineExceeded && ctx.Err() == nil:
			last = err.Error()
		default:
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("submit: %w (last: %s)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// VerifyCommitted checks that tx is in the node's block at height: GetTx
// returns it with a Merkle inclusion proof that verifies, at that height,
// and the block at that height (its hash and tx root re-computed) has the
// proof's tx root and holds tx at the proof's index. A pinned client also
// requires that block to carry Pin.Quorum valid cosignatures, for the
// pinned chain ID, from pinned nodes (the node gathers them from its peers
// in GetBlock; a block just applied is asked again until the peers have
// it). While the node has not applied height yet, or the cosignatures are
// short, it waits, up to 10s in all. Every failure wraps ErrUnproven.
func (c *Client) VerifyCommitted(ctx context.Context, tx []byte, height uint64) error {
	hash := ledger.TxHash(tx)
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: tx %x said committed at height %d: %s", ErrUnproven, hash[:8], height, fmt.Sprintf(format, args...))
	}
	wctx, cancel := context.WithTimeout(ctx, proofWait)
	defer cancel()
	rec, err := c.Tx(wctx, hash)
	// Not found at first: ask again, reading the node's head before each
	// lookup. A node whose head had reached height before it answered "not
	// found" does not hold the tx (a head read after the lookup could have
	// reached height in between).
	wait := 2 * time.Millisecond // doubles to 64ms: a follower applies a commit within moments
	for err != nil {
		if status.Code(err) != codes.NotFound {
			return fail("%v", err)
		}
		st, serr := c.Status(wctx)
		if serr != nil {
			return fail("the node does not find it (%v) and gives no status: %v", err, serr)
		}
		if rec, err = c.Tx(wctx, hash); err == nil {
			break
		}
		if status.Code(err) == codes.NotFound && st.Height >= height {
			return fail("the node's chain (head %d) does not hold it", st.Height)
		}
		select {
		case <-wctx.Done():
			return fail("the node did not reach that height within %v (head %d)", proofWait, st.Height)
		case <-time.After(wait):
		}
		wait = min(2*wait, 64*time.Millisecond)
	}
	if rec.Height != height {
		return fail("the node's proof puts it at height %d", rec.Height)
	}
	var vb *VerifiedBlock
	if c.pin == nil {
		vb, err = c.oneBlock(wctx, height)
	} else {
		vb, err = c.pinnedBlock(wctx, height)
	}
	if err != nil {
		return fail("block: %v", err)
	}
	hdr := vb.Block.Header
	switch {
	case !bytes.Equal(rec.TxRoot, hdr.TxRoot[:]):
		return fail("the proof's tx root %x is not the block's %x", rec.TxRoot[:min(8, len(rec.TxRoot))], hdr.TxRoot[:8])
	case rec.TreeSize != uint64(len(vb.Block.Txs)) || rec.Index >= rec.TreeSize:
		return fail("the proof is for index %d of %d txs, the block has %d", rec.Index, rec.TreeSize, len(vb.Block.Txs))
	case ledger.TxHash(vb.Block.Txs[rec.Index]) != hash:
		return fail("the block's tx %d is another tx", rec.Index)
	}
	return nil
}

// Status returns the node's view of itself and the cluster.
func (c *Client) Status(ctx context.Context) (*ledgerv1.StatusResponse, error) {
	st, err := c.api.Status(ctx, &ledgerv1.StatusRequest{})
	return st, c.typed(err)
}

// typed returns err, a gRPC call's error, so that errors.Is(err,
// tlsid.ErrNotAllowed) holds when the connection failed because this
// client refused the server's TLS key: gRPC reports that only as text in
// an Unavailable status. The message is err's.
func (c *Client) typed(err error) error {
	if status.Code(err) != codes.Unavailable {
		return err
	}
	if r := c.refused.Load(); r != nil {
		return &notAllowedError{err: err, why: *r}
	}
	return err
}

// notAllowedError is a call that failed because the client refused the
// server's key.
type notAllowedError struct{ err, why error }

func (e *notAllowedError) Error() string   { return e.err.Error() }
func (e *notAllowedError) Unwrap() []error { return []error{e.err, e.why} }

// GRPCStatus keeps status.Code and status.Convert working on the error.
func (e *notAllowedError) GRPCStatus() *status.Status { return status.Convert(e.err) }

// VerifiedBlock is a block checked against its hash, with the cosignatures
// that verified.
type VerifiedBlock struct {
	Block        *ledger.Block
	Hash         [32]byte
	Cosignatures []Checkpoint
}

// Block fetches block h, asking for at least minCosignatures cosignatures.
// It checks that the block decodes, hashes to the hash sent and that its
// txs match the header's tx root, and that
// each cosignature is valid for that block and from a distinct node; it
// fails (wrapping ErrQuorum) when fewer than minCosignatures remain. chainID
// may be "" to accept the chain ID the cosignatures name, if they agree.
func (c *Client) Block(ctx context.Context, h uint64, minCosignatures int, chainID string) (*VerifiedBlock, error) {
	resp, err := c.api.GetBlock(ctx, &ledgerv1.GetBlockRequest{Height: h, MinCosignatures: uint32(minCosignatures)})
	if err != nil {
		if status.Code(err) == codes.FailedPrecondition {
			msg := strings.TrimPrefix(status.Convert(err).Message(), ErrQuorum.Error()+": ")
			return nil, fmt.Errorf("%w: %s", ErrQuorum, msg)
		}
		return nil, err
	}
	return verifyBlockResponse(resp, h, minCosignatures, chainID)
}

func verifyBlockResponse(resp *ledgerv1.BlockResponse, h uint64, minCosignatures int, chainID string) (*VerifiedBlock, error) {
	b, err := ledger.DecodeBlock(resp.Block)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", h, err)
	}
	hash := b.Hash()
	if b.Header.Height != h || !bytes.Equal(resp.Hash, hash[:]) || resp.Height != h {
		return nil, fmt.Errorf("block %d: server sent height %d / header height %d, hash %x / computed %x", h, resp.Height, b.Header.Height, resp.Hash, hash)
	}
	if root := ledger.TxRoot(b.Txs); root != b.Header.TxRoot || int(b.Header.NumTxs) != len(b.Txs) {
		return nil, fmt.Errorf("block %d: its %d txs do not match the header's tx root %x (%d txs)", h, len(b.Txs), b.Header.TxRoot[:8], b.Header.NumTxs)
	}
	vb := &VerifiedBlock{Block: b, Hash: hash}
	seen := map[string]bool{}
	for _, p := range resp.Cosignatures {
		cp, err := CheckpointFromProto(p)
		if err != nil {
			return nil, err
		}
		if chainID == "" {
			chainID = cp.ChainID
		}
		if err := cp.VerifyFor(chainID, h, hash); err != nil {
			return nil, fmt.Errorf("block %d: %w", h, err)
		}
		if seen[cp.NodeID] {
			continue
		}
		seen[cp.NodeID] = true
		vb.Cosignatures = append(vb.Cosignatures, *cp)
	}
	if len(vb.Cosignatures) < minCosignatures {
		return nil, fmt.Errorf("%w: block %d has %d valid cosignatures, want %d", ErrQuorum, h, len(vb.Cosignatures), minCosignatures)
	}
	return vb, nil
}

// oneBlock fetches block h, checked against its hash and tx root, without
// cosignatures: it reads the first block of a StreamBlocks from h, so the
// node gathers no checkpoints from its peers for it (GetBlock would).
//
// A stream that ends at once (the node's head not yet at h when it was
// opened, as when GetTx answered from a batch the head has not caught up
// with) is asked again until ctx ends.
func (c *Client) oneBlock(ctx context.Context, h uint64) (*VerifiedBlock, error) {
	wait := 2 * time.Millisecond
	for {
		resp, err := c.firstBlock(ctx, h)
		if err == nil {
			return verifyBlockResponse(resp, h, 0, "")
		}
		if !errors.Is(err, io.EOF) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("block %d: the node has no such block", h)
		case <-time.After(wait):
		}
		wait = min(2*wait, 64*time.Millisecond)
	}
}

// firstBlock reads the first block of a StreamBlocks from h; io.EOF when
// the stream ends before one.
func (c *Client) firstBlock(ctx context.Context, h uint64) (*ledgerv1.BlockResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream after the first block
	stream, err := c.api.StreamBlocks(ctx, &ledgerv1.StreamBlocksRequest{FromHeight: h})
	if err != nil {
		return nil, err
	}
	return stream.Recv()
}

// Blocks streams blocks from height from, calling fn for each after
// checking its hash; with follow it keeps waiting for new blocks until ctx
// ends or fn returns an error.
//
// A node sends at most its limits.max_range blocks per call without follow;
// Blocks asks again from where a call stopped until one sends nothing.
func (c *Client) Blocks(ctx context.Context, from uint64, follow bool, fn func(*VerifiedBlock) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.streamBlocks(ctx, &ledgerv1.StreamBlocksRequest{FromHeight: from, Follow: follow})
	if err != nil {
		return err
	}
	next, got := from, 0
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if follow || got == 0 {
				return nil
			}
			if stream, err = c.streamBlocks(ctx, &ledgerv1.StreamBlocksRequest{FromHeight: next}); err != nil {
				return err
			}
			got = 0
			continue
		}
		if err != nil {
			return err
		}
		vb, err := verifyBlockResponse(resp, next, 0, "")
		if err != nil {
			return err
		}
		if err := fn(vb); err != nil {
			return err
		}
		next++
		got++
	}
}

// streamBlocks opens a StreamBlocks call, waiting out the node's read
// rate limit as paceReads does (a refused stream fails on its first
// receive, so the first message is read here). The stream lives as long
// as ctx.
func (c *Client) streamBlocks(ctx context.Context, req *ledgerv1.StreamBlocksRequest) (ledgerv1.Ledger_StreamBlocksClient, error) {
	deadline := time.Now().Add(maxReadWait)
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		stream, err := c.api.StreamBlocks(ctx, req)
		if err != nil {
			return nil, err
		}
		resp, err := stream.Recv()
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			return &firstBuffered{Ledger_StreamBlocksClient: stream, first: resp, err: err}, nil
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
}

// firstBuffered is a block stream whose first message was already read.
type firstBuffered struct {
	ledgerv1.Ledger_StreamBlocksClient
	first *ledgerv1.BlockResponse
	err   error
	done  bool
}

func (f *firstBuffered) Recv() (*ledgerv1.BlockResponse, error) {
	if !f.done {
		f.done = true
		return f.first, f.err
	}
	return f.Ledger_StreamBlocksClient.Recv()
}

// Tx fetches a committed tx and verifies its Merkle inclusion proof
// against the tx root the node reports.
func (c *Client) Tx(ctx context.Context, hash [32]byte) (*ledgerv1.GetTxResponse, error) {
	resp, err := c.api.GetTx(ctx, &ledgerv1.GetTxRequest{Hash: hash[:]})
	if err != nil {
		return nil, err
	}
	if ledger.TxHash(resp.Envelope) != hash {
		return nil, fmt.Errorf("tx %x: server sent an envelope with another hash", hash[:8])
	}
	var root [32]byte
	if len(resp.TxRoot) != 32 {
		return nil, fmt.Errorf("tx %x: tx root is %d bytes", hash[:8], len(resp.TxRoot))
	}
	copy(root[:], resp.TxRoot)
	if err := ledger.VerifyInclusion(hash, resp.Index, resp.TreeSize, resp.Proof, root); err != nil {
		return nil, fmt.Errorf("tx %x: %w", hash[:8], err)
	}
	return resp, nil
}

// Join asks the cluster (through this node) to add a node, promoting it to
// voter once caught up when voter is set.
func (c *Client) Join(ctx context.Context, nodeID, raftAddress, grpcAddress string, voter bool) error {
	_, err := c.api.Join(ctx, &ledgerv1.JoinRequest{NodeId: nodeID, RaftAddress: raftAddress, GrpcAddress: grpcAddress, Voter: voter})
	return err
}

// Remove asks the cluster (through this node) to remove a node.
func (c *Client) Remove(ctx context.Context, nodeID string) error {
	_, err := c.api.Remove(ctx, &ledgerv1.RemoveRequest{NodeId: nodeID})
	return err
}
