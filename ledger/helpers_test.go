package ledger

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"testing"
	"time"
)

const testChain = "fedtune-test"

// t0 is the time of the first test block.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// actor is a member with a deterministic key and its own nonce counter.
type actor struct {
	name  string
	role  Role
	key   ed25519.PrivateKey
	id    string
	nonce uint64
}

func newActor(name string, role Role) *actor {
	seed := sha256.Sum256([]byte("fedtune test key " + name))
	k := ed25519.NewKeyFromSeed(seed[:])
	a := &actor{name: name, role: role, key: k, id: KeyID(k.Public().(ed25519.PublicKey))}
	testKeys.Store(a.id, k)
	return a
}

// testKeys maps the ID of every actor made to its key, so that test
// proposals by a node ID can be signed (proposalEntry).
var testKeys sync.Map

func (a *actor) pubHex() string { return hex.EncodeToString(a.key.Public().(ed25519.PublicKey)) }

// sign signs body with the actor's next nonce.
func (a *actor) sign(t testing.TB, body TxBody) []byte {
	t.Helper()
	a.nonce++
	env, err := SignTx(a.key, testChain, a.nonce, body)
	if err != nil {
		t.Fatalf("%s: SignTx %s: %v", a.name, body.TxType(), err)
	}
	return env
}

// testDatasetRoot is a well-formed Merkle root for DatasetRegistered.
var testDatasetRoot = hexDigest("dataset root")

func hexDigest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// cast is the standard set of test members.
type cast struct {
	admin, coord, agg, auditor *actor
	trainers                   []*actor
	node                       *actor
}

func newCast() *cast {
	return &cast{
		admin:    newActor("admin", RoleAdmin),
		coord:    newActor("coordinator", RoleCoordinator),
		agg:      newActor("aggregator", RoleAggregator),
		auditor:  newActor("auditor", RoleAuditor),
		trainers: []*actor{newActor("trainer-a", RoleTrainer), newActor("trainer-b", RoleTrainer), newActor("trainer-c", RoleTrainer)},
		node:     newActor("node-1", ""),
	}
}
