package adversarial

// Attacks on the ledger's transaction rules that today's code already
// refuses: a tx for another chain, a replayed or re-encoded tx, a reused
// nonce, a signature by someone else's key, a stranger's tx, and the round
// rules a trainer meets (not selected, past the deadline, a second update).
// They guard those defences against regressions.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// exChain signs and submits txs as the devnet's identities, keeping each
// signer's next nonce.
type exChain struct {
	t      *testing.T
	ctx    context.Context
	nw     *devnet.Network
	nonces map[string]uint64 // last committed nonce by identity name
}

func exNewChain(t *testing.T, ctx context.Context, nw *devnet.Network) *exChain {
	return &exChain{t: t, ctx: ctx, nw: nw, nonces: map[string]uint64{}}
}

// sign signs body as the named identity with the given nonce for the
// devnet's chain.
func (c *exChain) sign(name string, nonce uint64, body ledger.TxBody) []byte {
	c.t.Helper()
	return exSignFor(c.t, c.nw.Keys[name], c.nw.ChainID, nonce, body)
}

func exSignFor(t *testing.T, key ed25519.PrivateKey, chainID string, nonce uint64, body ledger.TxBody) []byte {
	t.Helper()
	env, err := ledger.SignTx(key, chainID, nonce, body)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// next signs body as name with its next nonce.
func (c *exChain) next(name string, body ledger.TxBody) []byte {
	c.t.Helper()
	return c.sign(name, c.nonces[name]+1, body)
}

// submit sends env through ledger node i and waits for its fate.
func (c *exChain) submit(i int, env []byte) (uint64, error) {
	c.t.Helper()
	lc, err := c.nw.Ledger(c.ctx, i)
	if err != nil {
		c.t.Fatalf("dial ledger %d: %v", i, err)
	}
	defer lc.Close()
	return lc.SubmitWait(c.ctx, env)
}

// commit submits body as name with its next nonce and requires that the
// ledger commits it; it returns the envelope and its height.
func (c *exChain) commit(name string, body ledger.TxBody) ([]byte, uint64) {
	c.t.Helper()
	env := c.next(name, body)
	h, err := c.submit(0, env)
	if err != nil {
		c.t.Fatalf("%s as %s: %v", body.TxType(), name, err)
	}
	c.nonces[name]++
	return env, h
}

// refused submits env through node i (a follower forwards it) and requires
// a rejection with the given code whose reason contains every one of want.
func (c *exChain) refused(i int, env []byte, code ledger.Code, want ...string) {
	c.t.Helper()
	h, err := c.submit(i, env)
	if err == nil {
		c.t.Fatalf("the ledger committed the attack at height %d; want a %s rejection", h, code)
	}
	if !errors.Is(err, client.ErrRejected) || !errors.Is(err, &ledger.TxError{Code: code}) {
		c.t.Fatalf("err = %v; want a rejection with code %s", err, code)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			c.t.Fatalf("rejection %q does not say %q", err, w)
		}
	}
	c.t.Logf("refused: %v", err)
}

// nonce reads the last nonce the ledger applied for the named identity.
func (c *exChain) nonce(name string) uint64 {
	c.t.Helper()
	lc, err := c.nw.Ledger(c.ctx, 2)
	if err != nil {
		c.t.Fatal(err)
	}
	defer lc.Close()
	n, err := lc.Nonce(c.ctx, c.nw.ID(name))
	if err != nil {
		c.t.Fatal(err)
	}
	return n
}

// round reads round r of job from the ledger.
func (c *exChain) round(job string, r uint64) *ledger.Round {
	c.t.Helper()
	lc, err := c.nw.Ledger(c.ctx, 1)
	if err != nil {
		c.t.Fatal(err)
	}
	defer lc.Close()
	rd, err := lc.Round(c.ctx, job, r)
	if err != nil {
		c.t.Fatal(err)
	}
	return rd
}

// exDigest returns a random SHA-256-shaped hex digest.
func exDigest(t *testing.T) string {
	t.Helper()
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// exRounds is the ledger state the round attacks need: a base model, a
// dataset per trainer, and rounds opened by the coordinator.
type exRounds struct {
	model      string
	datasets   map[string]string // trainer name -> dataset digest
	registered map[string]bool   // jobs with a JobRegistered on the chain
}

// exSetUp registers a base model and the trainers' datasets, as the
// coordinator and the trainers do when a network starts.
func exSetUp(c *exChain, trainers ...string) *exRounds {
	c.t.Helper()
	s := &exRounds{model: exDigest(c.t), datasets: map[string]string{}, registered: map[string]bool{}}
	c.commit("coordinator", ledger.ModelRegistered{Digest: s.model, Name: "base", Licence: "CC0-1.0", Source: "adversarial suite"})
	for _, tr := range trainers {
		d := ledger.DatasetRegistered{Digest: exDigest(c.t), Name: tr + "-data", Licence: "CC0-1.0", Source: "adversarial suite",
			Samples: 100, Root: exDigest(c.t), Bytes: 4096}
		c.commit(tr, d)
		s.datasets[tr] = d.Digest
	}
	return s
}

// open opens round 1 of job for the named trainers with the given
// deadline, signed by the coordinator. (One place to adapt when a round
// needs more on the ledger before it opens, e.g. the job's recipe.)
func (s *exRounds) open(c *exChain, job string, deadline time.Time, trainers ...string) {
	c.t.Helper()
	if err := s.tryOpen(c, job, deadline, trainers...); err != nil {
		c.t.Fatalf("RoundOpened of %s: %v", job, err)
	}
}

func (s *exRounds) tryOpen(c *exChain, job string, deadline time.Time, trainers ...string) error {
	c.t.Helper()
	var ids []string
	for _, tr := range trainers {
		ids = append(ids, c.nw.ID(tr))
	}
	if !s.registered[job] {
		// The job's recipe first: the coordinator that registers it owns it.
		c.commit("coordinator", ledger.JobRegistered{JobID: job, Recipe: ledger.RoundRecipe{Strategy: "fedavg", Compression: "none",
			MinTrainers: 1, Aggregators: []string{c.nw.ID("aggregator")}}})
		s.registered[job] = true
	}
	env := c.next("coordinator", ledger.RoundOpened{JobID: job, Round: 1, ConfigDigest: exDigest(c.t), BaseModel: s.model,
		Strategy: "fedavg", Trainers: ids, Deadline: deadline})
	if _, err := c.submit(0, env); err != nil {
		return err
	}
	c.nonces["coordinator"]++
	return nil
}

// openShort opens round 1 of job with a deadline soon after its block,
// and returns the deadline. A loaded machine may take longer than the
// first margin to commit the tx; then it tries a longer one.
func (s *exRounds) openShort(c *exChain, job string, trainers ...string) time.Time {
	c.t.Helper()
	for margin := time.Second; ; margin *= 2 {
		deadline := time.Now().Add(margin)
		err := s.tryOpen(c, job, deadline, trainers...)
		if err == nil {
			return deadline
		}
		if !strings.Contains(err.Error(), "is not after the block time") || margin > time.Minute {
			c.t.Fatalf("RoundOpened of %s: %v", job, err)
		}
	}
}

// update is trainer's UpdateSubmitted to round 1 of job.
func (s *exRounds) update(job, trainer, digest string) ledger.UpdateSubmitted {
	return ledger.UpdateSubmitted{JobID: job, Round: 1, UpdateDigest: digest, DatasetDigest: s.datasets[trainer], Samples: 10,
		Metrics: map[string]float64{"loss": 1.5}}
}

// TestAttackLedgerTxRules tries, against three real ledger nodes, the tx
// forgeries and replays the FSM already refuses, and the round rules a
// trainer meets. Each attack is refused with its reason and leaves the
// chain (every node's height and head) as it was.
func TestAttackLedgerTxRules(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	nw := startLedgers(t, ctx)
	c := exNewChain(t, ctx, nw)
	s := exSetUp(c, "trainer-1", "trainer-2")
	const job, late = "ex-rules", "ex-late"
	lateDeadline := s.openShort(c, late, "trainer-1")
	s.open(c, job, time.Now().Add(time.Hour), "trainer-1")
	// attack runs fn as a subtest and requires that the chain is the same
	// after it as before.
	attack := func(name string, fn func(t *testing.T, c *exChain)) {
		t.Run(name, func(t *testing.T) {
			before := waitSettled(t, ctx, nw.Net)
			fn(t, c.on(t))
			requireUnchanged(t, ctx, nw.Net, before)
		})
	}

	attack("CrossChainReplay", func(t *testing.T, c *exChain) {
		// trainer-1's update as signed for another chain, replayed here.
		env := exSignFor(t, nw.Keys["trainer-1"], "fedtune-testnet", c.nonces["trainer-1"]+1, s.update(job, "trainer-1", exDigest(t)))
		c.refused(1, env, ledger.CodeWrongChain, `tx is for chain "fedtune-testnet"`, `this chain is "`+nw.ChainID+`"`)
	})
	attack("StrangerSigner", func(t *testing.T, c *exChain) {
		key, err := ledger.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		env := exSignFor(t, key, nw.ChainID, 1, s.update(job, "trainer-1", exDigest(t)))
		c.refused(2, env, ledger.CodeUnknownSigner, "signer "+ledger.KeyID(key.Public().(ed25519.PublicKey))+" is not a member")
	})
	attack("SignedWithAnothersKey", func(t *testing.T, c *exChain) {
		// A payload naming trainer-1 as its signer, signed by trainer-2:
		// under trainer-1's key ID the signature does not verify ...
		env := c.next("trainer-1", s.update(job, "trainer-1", exDigest(t)))
		e, err := ledger.DecodeEnvelope(env)
		if err != nil {
			t.Fatal(err)
		}
		e.Signatures[0].Sig = ed25519.Sign(nw.Keys["trainer-2"], ledger.PAE(e.PayloadType, e.Payload))
		c.refused(0, e.Encode(), ledger.CodeBadSignature, "signature")
		// ... and under trainer-2's key ID it does not match the payload.
		e.Signatures[0].KeyID = nw.ID("trainer-2")
		c.refused(1, e.Encode(), ledger.CodeBadSignature, "signature keyid", "differs from payload signer "+nw.ID("trainer-1"))
	})
	attack("TamperedPayload", func(t *testing.T, c *exChain) {
		env := c.next("trainer-1", s.update(job, "trainer-1", exDigest(t)))
		e, err := ledger.DecodeEnvelope(env)
		if err != nil {
			t.Fatal(err)
		}
		tampered := strings.Replace(string(e.Payload), `"samples":10`, `"samples":99`, 1)
		if tampered == string(e.Payload) {
			t.Fatalf("payload %s has no samples field to change", e.Payload)
		}
		e.Payload = []byte(tampered)
		c.refused(2, e.Encode(), ledger.CodeBadSignature, "signature")
	})
	attack("WrongRole", func(t *testing.T, c *exChain) {
		// A trainer opening a round for itself.
		env := c.next("trainer-2", ledger.RoundOpened{JobID: "ex-self", Round: 1, ConfigDigest: exDigest(t), BaseModel: s.model,
			Strategy: "fedavg", Trainers: []string{nw.ID("trainer-2")}, Deadline: time.Now().Add(time.Hour)})
		c.refused(0, env, ledger.CodeForbidden, "RoundOpened needs role coordinator", "is trainer")
	})
	attack("NonSelectedUpdate", func(t *testing.T, c *exChain) {
		env := c.next("trainer-2", s.update(job, "trainer-2", exDigest(t)))
		c.refused(1, env, ledger.CodeNotSelected, "trainer "+nw.ID("trainer-2")+" is not selected for round 1 of job \""+job+"\"")
	})

	// An honest update, then what a replayer or the trainer itself might
	// try with it.
	first := c.next("trainer-1", s.update(job, "trainer-1", exDigest(t)))
	height, err := c.submit(0, first)
	if err != nil {
		t.Fatal(err)
	}
	c.nonces["trainer-1"]++
	attack("ReplayedTx", func(t *testing.T, c *exChain) {
		// The same bytes again, through every node: answered with the
		// first copy's height, applied once.
		for i := range nw.LedgerGRPC {
			h, err := c.submit(i, first)
			if err != nil || h != height {
				t.Fatalf("replay through node %d: height %d, %v; want the first copy's height %d", i, h, err, height)
			}
		}
		if r := c.round(job, 1); len(r.Updates) != 1 {
			t.Fatalf("round 1 has %d updates after the replay, want 1", len(r.Updates))
		}
		if got := c.nonce("trainer-1"); got != c.nonces["trainer-1"] {
			t.Fatalf("trainer-1's nonce is %d after the replay, want %d", got, c.nonces["trainer-1"])
		}
	})
	attack("ReencodedReplay", func(t *testing.T, c *exChain) {
		// The same signed payload in other envelope bytes (a new tx hash):
		// only the canonical encoding is a tx.
		re := strings.Replace(string(first), `{"payloadType"`, `{ "payloadType"`, 1)
		if re == string(first) {
			t.Fatalf("envelope %.40s… does not start as expected", first)
		}
		c.refused(2, []byte(re), ledger.CodeMalformed, "not in canonical form")
		// Re-padded base64 of the same payload decodes to the same bytes.
		e, err := ledger.DecodeEnvelope(first)
		if err != nil {
			t.Fatal(err)
		}
		std := base64.StdEncoding.EncodeToString(e.Payload)
		raw := strings.TrimRight(std, "=")
		if raw != std {
			alt := strings.Replace(string(first), std, raw, 1)
			c.refused(0, []byte(alt), ledger.CodeMalformed, "envelope")
		}
	})
	attack("NonceReuse", func(t *testing.T, c *exChain) {
		// A new body under the nonce the committed update used.
		n := c.nonces["trainer-1"]
		env := c.sign("trainer-1", n, s.update(job, "trainer-1", exDigest(t)))
		c.refused(1, env, ledger.CodeBadNonce, "nonce "+exItoa(n)+" is not above the last nonce "+exItoa(n))
		// And an older one.
		env = c.sign("trainer-1", n-1, s.update(job, "trainer-1", exDigest(t)))
		c.refused(2, env, ledger.CodeBadNonce, "is not above the last nonce")
	})
	attack("SecondUpdate", func(t *testing.T, c *exChain) {
		env := c.next("trainer-1", s.update(job, "trainer-1", exDigest(t)))
		c.refused(0, env, ledger.CodeAlreadyExists, "trainer "+nw.ID("trainer-1")+" already submitted update")
	})
	attack("LateUpdate", func(t *testing.T, c *exChain) {
		if d := time.Until(lateDeadline); d > -300*time.Millisecond {
			time.Sleep(d + 300*time.Millisecond)
		}
		env := c.next("trainer-1", s.update(late, "trainer-1", exDigest(t)))
		c.refused(1, env, ledger.CodeDeadlinePassed, "round 1 of job \""+late+"\" closed for updates at")
		if r := c.round(late, 1); len(r.Updates) != 0 {
			t.Fatalf("the late round has %d updates, want 0", len(r.Updates))
		}
	})
}

// on returns c reporting to t (a subtest's).
func (c *exChain) on(t *testing.T) *exChain {
	d := *c
	d.t = t
	return &d
}

func exItoa(n uint64) string { return strconv.FormatUint(n, 10) }
