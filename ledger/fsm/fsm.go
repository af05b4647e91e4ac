package fsm

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/internal/codec"
	"github.com/fedtune/fedtune/ledger/pebblestore"
)

// Options configure New.
type Options struct {
	// Logger receives the FSM's logs; nil discards them.
	Logger *slog.Logger
	// OnBlock, if set, is called after each block is committed to the state,
	// from the goroutine that called Apply, after the FSM's locks are
	// released (so it may query the FSM).
	OnBlock func(*ledger.Block)
	// Now is CheckTx's clock for deadline checks; nil means time.Now.
	Now func() time.Time
	// DeferSync commits the blocks of raft log entries (index > 0) without
	// waiting for an fsync. It is for a node whose raft log shares the
	// state's pebble WAL: raft syncs each entry before it is applied, and the
	// next synced log write makes the applied state durable too. A crash
	// before that loses only a suffix of applied entries, together with the
	// applied index stored in the same batch, so raft replays them (or, if
	// the state is behind raft's latest snapshot, the node restores that
	// snapshot first). Blocks applied outside raft (ApplyProposal) and the
	// genesis block are always synced.
	DeferSync bool
}

// ErrGenesisMismatch is returned by New and Restore when the state was
// created from another genesis than the one given.
var ErrGenesisMismatch = errors.New("ledger: state belongs to another genesis")

// ErrFSMBroken wraps the storage error that stopped the FSM: after a failed
// write its state can no longer follow the raft log, and the node must stop
// and restart (raft then replays the log from the last applied block).
var ErrFSMBroken = errors.New("ledger: FSM stopped after a storage error")

// maxBlockTime bounds block times so that time+1 never overflows.
const maxBlockTime = math.MaxInt64 - 1<<40

// FSM is the ledger's replicated state machine. It implements raft.FSM:
// Apply takes one log entry holding an encoded Proposal, checks every
// transaction, and commits one block (or none, if no transaction is valid)
// together with the state changes, in one pebble batch. Its query methods may
// be called concurrently with Apply.
type FSM struct {
	st      *pebblestore.State
	g       *ledger.Genesis
	log     *slog.Logger
	onBlock func(*ledger.Block)
	now     func() time.Time
	// deferSync: see Options.DeferSync.
	deferSync bool
	// noPrecheck turns off parallel signature verification (tests compare).
	noPrecheck bool

	applyMu sync.Mutex // serialises Apply, Restore and genesis
	// members caches committed member records for Apply (see memberCache).
	members memberCache
	// nonces caches the committed last nonce of each signer Apply has seen
	// (0: none), so that a tx does not read it from pebble. Guarded by
	// applyMu; updated with the values each committed block writes;
	// dropped by Restore.
	nonces map[string]uint64
	// decoded holds txs this node decoded before proposing them (see
	// NoteDecoded), so that applying them does not decode them again.
	decoded decodedCache

	mu     sync.RWMutex
	head   head
	broken error
}

var _ raft.FSM = (*FSM)(nil)

// ApplyResult is what FSM.Apply returns (as the raft.ApplyFuture's
// Response()) for a proposal.
type ApplyResult struct {
	// Block is the block committed, or nil if no transaction was valid (or
	// the entry was not applied at all; see Err).
	Block *ledger.Block
	// Results has one entry per transaction of the proposal, in order: Err is
	// nil for those included in Block, else a *TxError saying why not.
	Results []TxResult
	// Err is set when the entry as a whole was not applied: it does not
	// decode (every replica agrees; no state changes), it was already applied
	// (ErrAlreadyApplied), or the state store failed (wraps ErrFSMBroken).
	Err error
}

// TxResult is the fate of one proposed transaction.
type TxResult struct {
	Hash [32]byte
	Err  error // nil: included; else a *TxError
}

// ErrAlreadyApplied is ApplyResult.Err for a raft log entry at or below the
// index the state already includes (raft replaying its log after a restart).
var ErrAlreadyApplied = errors.New("ledger: log entry already applied")

// New opens the ledger state in st for genesis g. On an empty state it
// writes the genesis block (height 0: the genesis members and policy); on an
// existing one it checks that the state was made from the same genesis.
func New(st *pebblestore.State, g *ledger.Genesis, opts Options) (*FSM, error) {
	if st == nil || g == nil {
		return nil, errors.New("ledger: NewFSM needs a state and a genesis")
	}
	if err := g.Validate(); err != nil {
		return nil, err
	}
	f := &FSM{st: st, g: g, log: opts.Logger, onBlock: opts.OnBlock, now: opts.Now, deferSync: opts.DeferSync}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	f.log = f.log.With("component", "ledger-fsm", "chain", g.ChainID)
	if f.now == nil {
		f.now = time.Now
	}
	ok, err := f.loadHead()
	if err != nil {
		return nil, err
	}
	if !ok {
		if err := f.writeGenesis(); err != nil {
			return nil, err
		}
	}
	if err := f.ensureUpdateIndex(); err != nil {
		return nil, err
	}
	return f, nil
}

// ensureUpdateIndex builds the digest-first update index (c/ux/, see
// state.go) from the a/ud/ state when the state does not say it has one: a
// chain written before the index existed, or restored from a snapshot of
// such a chain. Every later a/ud/ write keeps it current.
func (f *FSM) ensureUpdateIndex() error {
	if _, ok, err := f.st.Get([]byte(keyUpdateIdxVer)); err != nil {
		return fmt.Errorf("ledger: update index: %w", err)
	} else if ok {
		return nil
	}
	b := f.st.NewBatch()
	defer b.Close()
	if err := b.DeletePrefix([]byte(prefixUpdateIdx)); err != nil {
		return fmt.Errorf("ledger: update index: %w", err)
	}
	n := 0
	err := f.st.Iter([]byte(prefixUpdateDig), func(k, v []byte) error {
		ik := updateIndexKeyOf(k)
		if ik == nil {
			return fmt.Errorf("malformed update key %q", k)
		}
		n++
		return b.Set(ik, v)
	})
	if err == nil {
		err = b.Set([]byte(keyUpdateIdxVer), []byte{1})
	}
	if err == nil {
		err = b.Commit()
	}
	if err != nil {
		return fmt.Errorf("ledger: update index: %w", err)
	}
	if n > 0 {
		f.log.Info("update index built", "updates", n)
	}
	return nil
}

// loadHead reads the head and checks the genesis; ok is false on an empty state.
func (f *FSM) loadHead() (bool, error) {
	raw, ok, err := f.st.Get([]byte(keyHead))
	if err != nil {
		return false, fmt.Errorf("ledger: read head: %w", err)
	}
	if !ok {
		return false, nil
	}
	h, err := decodeHead(raw)
	if err != nil {
		return false, fmt.Errorf("ledger: decode head: %w", err)
	}
	gb, ok, err := f.st.Get([]byte(keyGenesis))
	if err != nil {
		return false, fmt.Errorf("ledger: read genesis: %w", err)
	}
	if !ok || !bytes.Equal(gb, f.g.Canonical()) {
		return false, fmt.Errorf("%w: the stored chain was made from another genesis file than %s (chain %q)", ErrGenesisMismatch, f.g.Source, f.g.ChainID)
	}
	f.mu.Lock()
	f.head = h
	f.mu.Unlock()
	return true, nil
}

// genesisBlock builds the height-0 block and its state writes.
func genesisBlock(g *ledger.Genesis) (*ledger.Block, writeSet) {
	ws := writeSet{keyGenesis: g.Canonical()}
	for _, m := range g.Members {
		id := ledger.KeyID(m.Key)
		ws[string(memberKey(id))] = mustJSON(ledger.Member{ID: id, PublicKey: fmt.Sprintf("%x", []byte(m.Key)), Role: m.Role, Name: m.Name, Active: true})
	}
	var zero [32]byte
	blk := &ledger.Block{Header: ledger.Header{
		Height:    0,
		TxRoot:    ledger.TxRoot(nil),
		StateHash: nextStateHash(zero, ws),
		Time:      g.UnixNano(),
	}}
	return blk, ws
}

func nextStateHash(prev [32]byte, ws writeSet) [32]byte {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(encodeWriteSet(ws))
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func (f *FSM) writeGenesis() error {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	blk, ws := genesisBlock(f.g)
	b := f.st.NewBatch()
	defer b.Close()
	for _, k := range slices.Sorted(maps.Keys(ws)) {
		if err := b.Set([]byte(k), ws[k]); err != nil {
			return fmt.Errorf("ledger: write genesis: %w", err)
		}
	}
	h := head{Height: 0, Hash: blk.Hash(), StateHash: blk.Header.StateHash, Time: blk.Header.Time}
	if err := firstErr(b.Set(blockKey(0), ledger.EncodeBlock(blk)), b.Set([]byte(keyHead), encodeHead(h))); err != nil {
		return fmt.Errorf("ledger: write genesis: %w", err)
	}
	if err := b.Commit(); err != nil {
		return fmt.Errorf("ledger: write genesis: %w", err)
	}
	f.mu.Lock()
	f.head = h
	f.mu.Unlock()
	f.log.Info("genesis block written", "hash", fmt.Sprintf("%x", h.Hash), "members", len(f.g.Members))
	return nil
}

// Genesis returns the genesis the FSM was opened with.
func (f *FSM) Genesis() *ledger.Genesis { return f.g }

// ChainID returns the chain ID.
func (f *FSM) ChainID() string { return f.g.ChainID }

// Height returns the height of the last block (0 = only genesis).
func (f *FSM) Height() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.head.Height
}

// Head returns the height and hash of the last block.
func (f *FSM) Head() (uint64, [32]byte) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.head.Height, f.head.Hash
}

// AppliedIndex returns the last raft log index the state includes.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.head.Applied
}

// Apply implements raft.FSM. It returns an *ApplyResult (nil for log entries
// that are not commands).
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	f.applyMu.Lock()
	res := f.applyEntry(l.Index, l.AppendedAt, l.Data, true)
	f.applyMu.Unlock()
	if res.Block != nil && f.onBlock != nil {
		f.onBlock(res.Block)
	}
	return res
}

// ApplyProposal applies a proposal outside raft (index 0: not recorded as a
// raft index). It is for tools and tests (the replay of committed blocks,
// whose proposal signatures are not kept); a node goes through raft. A
// proposal's signature is checked only when it has one: raft entries
// (Apply) must be signed.
func (f *FSM) ApplyProposal(p ledger.Proposal) *ApplyResult {
	f.applyMu.Lock()
	res := f.applyEntry(0, time.Time{}, ledger.EncodeProposal(p), false)
	f.applyMu.Unlock()
	if res.Block != nil && f.onBlock != nil {
		f.onBlock(res.Block)
	}
	return res
}

func (f *FSM) applyEntry(index uint64, appended time.Time, data []byte, needSig bool) *ApplyResult {
	f.mu.RLock()
	hd, broken := f.head, f.broken
	f.mu.RUnlock()
	if broken != nil {
		return &ApplyResult{Err: broken}
	}
	if index != 0 && index <= hd.Applied {
		return &ApplyResult{Err: fmt.Errorf("%w: index %d, state is at %d", ErrAlreadyApplied, index, hd.Applied)}
	}
	res, err := f.applyProposal(hd, index, appended, data, needSig)
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrFSMBroken, err)
		f.mu.Lock()
		f.broken = err
		f.mu.Unlock()
		f.log.Error("state store failed; FSM stopped", "index", index, "err", err)
		return &ApplyResult{Err: err}
	}
	return res
}

// applyProposal executes one log entry and commits its block, if any, with
// the new head. A returned error is the store's.
func (f *FSM) applyProposal(hd head, index uint64, appended time.Time, data []byte, needSig bool) (*ApplyResult, error) {
	res := &ApplyResult{}
	newHead := hd
	if index > hd.Applied {
		newHead.Applied = index
	}
	b := f.st.NewBatch()
	defer b.Close()
	var written writeSet // the state writes of the block, if any

	p, perr := ledger.DecodeProposal(data)
	if perr == nil && p.Time > maxBlockTime {
		perr = fmt.Errorf("%w: proposal time %d is out of range", ledger.ErrBadEncoding, p.Time)
	}
	if perr == nil {
		if err := f.checkProposal(b.Get, *p, appended, hd.Time, needSig); err != nil {
			var se *storageError
			if errors.As(err, &se) {
				return nil, err
			}
			res.Err = err
			f.log.Warn("proposal refused; no block", "index", index, "proposer", abbrev(p.Proposer), "err", err)
		}
	}
	if perr != nil {
		res.Err = perr
		f.log.Warn("log entry is not a valid proposal; skipped", "index", index, "err", perr)
	} else if res.Err == nil {
		t := p.Time
		if t <= hd.Time {
			t = hd.Time + 1
		}
		c := &execCtx{chainID: f.g.ChainID, genesis: f.g, policy: f.g.Policy, b: b, ws: writeSet{}, height: hd.Height + 1, time: t, seen: map[[32]byte]bool{}, fsm: f}
		written = c.ws
		res.Results = make([]TxResult, len(p.Txs))
		pre := f.precheck(p.Txs)
		var txs [][]byte
		size := 0
		for i, raw := range p.Txs {
			r := &res.Results[i]
			r.Hash = ledger.TxHash(raw)
			if len(txs) >= f.g.Policy.MaxBlockTxs {
				r.Err = txErr(ledger.CodeTooLarge, "block is full: policy max_block_txs is %d", f.g.Policy.MaxBlockTxs)
				continue
			}
			if size+len(raw) > f.g.Policy.MaxBlockBytes {
				r.Err = txErr(ledger.CodeTooLarge, "block is full: policy max_block_bytes is %d", f.g.Policy.MaxBlockBytes)
				continue
			}
			var pc *preChecked
			if pre != nil {
				pc = &pre[i]
			}
			_, ws, err := c.check(raw, pc)
			if err != nil {
				var se *storageError
				if errors.As(err, &se) {
					return nil, err
				}
				r.Err = err
				continue
			}
			if err := c.apply(ws); err != nil {
				return nil, err
			}
			c.seen[r.Hash] = true
			var w codec.Writer
			w.U64(c.height)
			w.U32(uint32(len(txs)))
			if err := b.Set(txIndexKey(r.Hash), w.B); err != nil {
				return nil, err
			}
			txs = append(txs, raw)
			size += len(raw)
		}
		if len(txs) > 0 {
			blk := &ledger.Block{Header: ledger.Header{
				Height:    c.height,
				PrevHash:  hd.Hash,
				TxRoot:    ledger.TxRoot(txs),
				StateHash: nextStateHash(hd.StateHash, c.ws),
				Time:      t,
				NumTxs:    uint32(len(txs)),
				Proposer:  p.Proposer,
			}, Txs: txs}
			if err := b.Set(blockKey(c.height), ledger.EncodeBlock(blk)); err != nil {
				return nil, err
			}
			newHead.Height, newHead.Hash, newHead.StateHash, newHead.Time = c.height, blk.Hash(), blk.Header.StateHash, t
			res.Block = blk
		}
	}
	if newHead == hd {
		return res, nil // nothing to record (a proposal applied outside raft with no block)
	}
	if err := b.Set([]byte(keyHead), encodeHead(newHead)); err != nil {
		return nil, err
	}
	commit := b.Commit
	if f.deferSync && index != 0 {
		commit = b.CommitNoSync
	}
	if err := commit(); err != nil {
		return nil, err
	}
	f.members.forget(written)
	f.noteNonces(written)
	f.mu.Lock()
	f.head = newHead
	f.mu.Unlock()
	if res.Block != nil {
		rejected := len(res.Results) - len(res.Block.Txs)
		f.log.Debug("block applied", "height", newHead.Height, "txs", len(res.Block.Txs), "rejected", rejected, "index", index)
	} else if len(res.Results) > 0 {
		f.log.Debug("proposal produced no block", "index", index, "rejected", len(res.Results))
	}
	return res, nil
}

// noteNonces updates the nonce cache with the nonces a committed block
// wrote. Called under applyMu.
func (f *FSM) noteNonces(ws writeSet) {
	if f.nonces == nil {
		return // filled on first use
	}
	for k, v := range ws {
		if id, ok := strings.CutPrefix(k, prefixNonce); ok {
			if n, err := parseU64(v); err == nil {
				f.nonces[id] = n
			} else {
				delete(f.nonces, id)
			}
		}
	}
}

// precheck decodes the envelopes of a proposal and verifies their
// signatures against the committed member keys on every core, so that the
// sequential execution only verifies again where a key changed within the
// block. It returns nil for proposals too small to be worth it.
func (f *FSM) precheck(txs [][]byte) []preChecked {
	workers := min(runtime.GOMAXPROCS(0), len(txs)/4)
	if workers < 2 || f.noPrecheck {
		return nil
	}
	out := make([]preChecked, len(txs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(txs) {
					return
				}
				if len(txs[i]) > f.g.Policy.MaxTxBytes {
					continue
				}
				pc := &out[i]
				pc.tx, pc.err = f.decodeTx(txs[i])
				if pc.err != nil {
					continue
				}
				m, ok, err := f.committedMember(pc.tx.Signer)
				if err != nil || !ok || !m.Active {
					continue
				}
				pub, err := hex.DecodeString(m.PublicKey)
				if err != nil || len(pub) != ed25519.PublicKeySize {
					continue
				}
				if pc.tx.VerifiedKey() == m.PublicKey || pc.tx.Envelope.Verify(ed25519.PublicKey(pub)) == nil {
					pc.key = m.PublicKey // (Admit on this node verified it already)
				}
			}
		})
	}
	wg.Wait()
	return out
}

// NoteDecoded offers the FSM a transaction this node has decoded itself
// (a leader decodes every submitted tx to reject malformed ones early), so
// that applying the block that holds it reuses the decoding instead of
// decoding the same bytes again. DecodeTx depends on nothing but the bytes,
// and the cached tx is only used for the identical envelope, so the outcome
// is unchanged; the signature is still verified when the tx is applied. The
// cache is bounded; a tx that is never applied is eventually dropped.
func (f *FSM) NoteDecoded(tx *ledger.Tx) { f.decoded.put(tx) }

// decodeTx is DecodeTx through the cache of NoteDecoded: a cached decoding
// of raw is taken out and returned instead of decoding raw again.
func (f *FSM) decodeTx(raw []byte) (*ledger.Tx, error) {
	if tx := f.decoded.take(raw); tx != nil {
		return tx, nil
	}
	return ledger.DecodeTx(raw)
}

// CheckTx checks a transaction against the current state (signature, member,
// role, nonce, the round state machine), as if it were the next block's
// first, and returns the *TxError it would be rejected with, or nil. It
// changes nothing; a node calls it to reject early.
func (f *FSM) CheckTx(envelope []byte) error {
	f.mu.RLock()
	hd, broken := f.head, f.broken
	f.mu.RUnlock()
	if broken != nil {
		return broken
	}
	t := f.now().UnixNano()
	if t <= hd.Time {
		t = hd.Time + 1
	}
	b := f.st.NewBatch()
	defer b.Close()
	c := &execCtx{chainID: f.g.ChainID, genesis: f.g, policy: f.g.Policy, b: b, ws: writeSet{}, height: hd.Height + 1, time: t, seen: map[[32]byte]bool{}}
	_, _, err := c.check(envelope, nil)
	return err
}

// Snapshot implements raft.FSM: a consistent view of the whole state, which
// Persist streams in pebblestore's snapshot format.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	sn := f.st.Snapshot()
	if sn == nil {
		return nil, fmt.Errorf("ledger: snapshot: %w", pebblestore.ErrClosed)
	}
	return &fsmSnapshot{sn: sn}, nil
}

// Restore implements raft.FSM: it replaces the whole state with a snapshot
// stream, atomically, and checks that it belongs to this genesis.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	f.members.reset()
	f.nonces = nil
	if err := f.st.Restore(rc); err != nil {
		return fmt.Errorf("ledger: restore: %w", err)
	}
	ok, err := f.loadHead()
	if err != nil {
		return fmt.Errorf("ledger: restore: %w", err)
	}
	if !ok {
		return errors.New("ledger: restore: snapshot holds no chain")
	}
	if err := f.ensureUpdateIndex(); err != nil {
		return fmt.Errorf("ledger: restore: %w", err)
	}
	// A snapshot may come from another node (the leader), and raft
	// tolerates crashes, not lies: a node cosigns the blocks it holds, so
	// it first re-derives the whole restored chain from genesis (every
	// block's hashes, signatures and state, as "ledger verify" does). A
	// chain that does not verify stops the FSM (fail-stop) instead of
	// being signed.
	start := time.Now()
	if err := VerifyChainContext(context.Background(), f.st, f.g, VerifyOptions{Logger: f.log}); err != nil {
		err = fmt.Errorf("%w: the restored snapshot's chain does not verify from genesis: %w", ErrFSMBroken, err)
		f.mu.Lock()
		f.broken = err
		f.mu.Unlock()
		f.log.Error("snapshot refused; FSM stopped", "err", err)
		return err
	}
	f.mu.Lock()
	f.broken = nil
	f.mu.Unlock()
	f.log.Info("state restored from snapshot and verified", "height", f.Height(), "applied", f.AppliedIndex(), "verify_seconds", time.Since(start).Seconds())
	return nil
}

// Err returns the error that stopped the FSM (wrapping ErrFSMBroken), or
// nil while it applies entries.
func (f *FSM) Err() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.broken
}

type fsmSnapshot struct{ sn *pebblestore.Snapshot }

// Persist implements raft.FSMSnapshot: it streams the state into sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.sn.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("ledger: persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("ledger: persist snapshot: %w", err)
	}
	return nil
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() { s.sn.Close() }
