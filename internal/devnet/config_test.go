package devnet

import (
	"crypto/ed25519"
	"reflect"
	"strings"
	"testing"
	"time"

	aggnode "github.com/fedtune/fedtune/aggregator/node"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/node"
)

// The configs devnet writes are the parts' own config types marshalled
// without their zero fields: each parses back, by the part's own parser,
// to what was written.
func TestMarshalConfigRoundTrip(t *testing.T) {
	id := strings.Repeat("ab", 32)
	nc := node.Config{NodeID: id, DataDir: "ledger-node-1", KeyFile: "keys/node-1.key", RaftAddress: "127.0.0.1:7001",
		GRPCAddress: "127.0.0.1:7101", Bootstrap: true, Peers: []node.PeerConfig{{ID: id, RaftAddress: "127.0.0.1:7001", GRPCAddress: "127.0.0.1:7101"}},
		Raft: node.RaftConfig{HeartbeatTimeout: 500 * time.Millisecond, CommitTimeout: 5 * time.Millisecond}}
	data, err := marshalConfig(&nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{"join", "metrics_address", "allow_unpinned", "limits", "snapshot_threshold", "0s"} {
		if strings.Contains(string(data), absent) {
			t.Errorf("zero field %q written:\n%s", absent, data)
		}
	}
	got, err := node.ParseConfig("node-1.yaml", data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if !reflect.DeepEqual(*got, nc) {
		t.Errorf("node config round trip:\n got %+v\nwant %+v", *got, nc)
	}

	cc := coordinator.DefaultServerConfig()
	cc.CoordinatorKey, cc.Ledger, cc.Tick = "keys/coordinator.key", "127.0.0.1:7101", 200*time.Millisecond
	cc.Aggregator = &coordinator.RemoteAggregatorConfig{Address: "127.0.0.1:7500", ID: id}
	cc.Artifacts = coordinator.ArtifactLimits{}
	if data, err = marshalConfig(&cc); err != nil {
		t.Fatal(err)
	}
	gotc, err := coordinator.ParseServerConfig("coordinator.yaml", data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	cc.Artifacts = coordinator.DefaultArtifactLimits()
	if !reflect.DeepEqual(*gotc, cc) {
		t.Errorf("coordinator config round trip:\n got %+v\nwant %+v", *gotc, cc)
	}

	ac := aggnode.Config{Listen: "127.0.0.1:7500", Key: "keys/aggregator.key", Ledger: "127.0.0.1:7102", LedgerGenesis: "genesis.yaml",
		Coordinator: "127.0.0.1:7400", CoordinatorID: id, DataDir: "aggregator"}
	if data, err = marshalConfig(&ac); err != nil {
		t.Fatal(err)
	}
	gota, err := aggnode.ParseConfig("aggregator.yaml", data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if !reflect.DeepEqual(*gota, ac) {
		t.Errorf("aggregator config round trip:\n got %+v\nwant %+v", *gota, ac)
	}
}

// The genesis devnet writes parses back, by ledger.ParseGenesis, to the
// members, nodes and policy it was built from.
func TestWriteGenesisRoundTrip(t *testing.T) {
	n := &Net{Opts: Options{Trainers: 2}, Dir: t.TempDir(), ChainID: "fedtune-devnet", Keys: map[string]ed25519.PrivateKey{}}
	for _, name := range []string{"admin", "coordinator", "aggregator", InferenceName, AuditorName, "trainer-1", "trainer-2", "node-1", "node-2", "node-3"} {
		k, err := ledger.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		n.Keys[name] = k
	}
	if err := n.writeGenesis(); err != nil {
		t.Fatal(err)
	}
	g, err := ledger.LoadGenesis(n.GenesisPath())
	if err != nil {
		t.Fatal(err)
	}
	if g.ChainID != n.ChainID || len(g.Members) != 7 || len(g.Nodes) != 3 || g.Policy.BlockInterval != 10*time.Millisecond {
		t.Fatalf("genesis %+v", g)
	}
	for _, m := range g.Members {
		if ledger.KeyID(m.Key) != n.ID(m.Name) {
			t.Errorf("member %s: key %s, want %s", m.Name, ledger.KeyID(m.Key), n.ID(m.Name))
		}
	}
	if g.Members[3].Role != ledger.RoleInference || g.Members[4].Role != ledger.RoleAuditor || g.Members[5].Role != ledger.RoleTrainer || g.Nodes[2].Name != "node-3" || ledger.KeyID(g.Nodes[2].Key) != n.ID("node-3") {
		t.Errorf("members %+v nodes %+v", g.Members, g.Nodes)
	}
	want := ledger.DefaultPolicy()
	want.BlockInterval = 10 * time.Millisecond
	if g.Policy != want {
		t.Errorf("policy %+v, want %+v", g.Policy, want)
	}
}
