package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// TestDatasetLsFromIndex: `dataset ls` lists the published datasets in
// the order they were published, from the ledger's index (a paged query),
// without streaming the chain's blocks: the node's read metrics show the
// listing queries and no StreamBlocks call.
func TestDatasetLsFromIndex(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n, err := devnet.Prepare(ctx, devnet.Options{Dir: t.TempDir(), Repo: "../..", InProcess: true, Trainers: 2, PretrainSteps: 1, Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	nw, err := n.StartLedgers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	c, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var empty, emptyErr bytes.Buffer
	if err := RunWith(ctx, []string{"dataset", "ls", "--addr", n.LedgerGRPC[0], "--genesis", n.GenesisPath()}, &empty, &emptyErr); err != nil ||
		!strings.Contains(empty.String(), "no dataset is published") {
		t.Fatalf("dataset ls of a chain without published data: %q, %v", empty.String(), err)
	}
	publish := func(who, name string) { publishTiny(t, ctx, n, c, who, name, "CC0-1.0") }
	// Published out of name order.
	order := []string{"zeta", "alpha", "mid"}
	publish("trainer-1", order[0])
	publish("trainer-2", order[1])
	publish("trainer-1", order[2])

	reads := func(rpc string) int {
		t.Helper()
		res, err := http.Get("http://" + n.LedgerMetrics[0] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		total := 0
		for _, m := range regexp.MustCompile(`fedtune_ledger_reads_total\{caller="[a-z_]+",rpc="`+rpc+`"\} (\d+)`).FindAllSubmatch(body, -1) {
			v, _ := strconv.Atoi(string(m[1]))
			total += v
		}
		return total
	}
	streams, queries := reads("stream_blocks"), reads("query")
	cli := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if err := RunWith(ctx, append(args, "--addr", n.LedgerGRPC[0], "--genesis", n.GenesisPath()), &out, &errb); err != nil {
			t.Fatalf("%v: %v (%s)", args, err, errb.String())
		}
		return out.String()
	}
	table := cli("dataset", "ls")
	var rows []string
	for _, line := range strings.Split(strings.TrimSpace(table), "\n")[1:] {
		rows = append(rows, strings.Fields(line)[0])
	}
	if strings.Join(rows, ",") != strings.Join(order, ",") || !strings.HasPrefix(table, "NAME") {
		t.Fatalf("dataset ls:\n%s\nwant the rows in publication order %v", table, order)
	}
	var js []publishedSummary
	if err := json.Unmarshal([]byte(cli("dataset", "ls", "--json")), &js); err != nil || len(js) != 3 || js[0].Name != "zeta" || js[2].Name != "mid" || js[0].Shards != 3 || js[0].Samples != 5 {
		t.Fatalf("dataset ls --json: %+v, %v", js, err)
	}
	if got := cli("dataset", "show", "alpha"); !strings.Contains(got, "alpha") || !strings.Contains(got, "published") {
		t.Fatalf("dataset show alpha: %s", got)
	}
	if s := reads("stream_blocks"); s != streams {
		t.Errorf("dataset ls streamed the chain's blocks (%d StreamBlocks calls)", s-streams)
	}
	if q := reads("query"); q <= queries {
		t.Errorf("dataset ls made no query (%d before, %d after)", queries, q)
	}
	// --from-chain lists the same rows, in the same order, from the
	// re-derived chain (reading its blocks).
	if chain := cli("dataset", "ls", "--from-chain"); chain != table {
		t.Errorf("dataset ls --from-chain:\n%s\nwant what the index gives:\n%s", chain, table)
	}
	if s := reads("stream_blocks"); s == streams {
		t.Errorf("dataset ls --from-chain read no blocks")
	}
}

// publishTiny records a five-sample published dataset named name under
// licence as member who, through the ledger alone (its shards are not
// uploaded: what reads only the ledger needs no more), and returns its
// digest.
func publishTiny(t *testing.T, ctx context.Context, n *devnet.Net, c *client.Client, who, name, licence string) string {
	t.Helper()
	key := n.Keys[who]
	d := &datasets.Dataset{Name: name}
	for i := range 5 {
		d.Samples = append(d.Samples, datasets.Sample{ID: fmt.Sprint(i), Text: fmt.Sprintf("%s sample %d", name, i)})
	}
	p, err := datasets.Publish(d, datasets.PublishOptions{Name: name, Format: dspub.FormatText, Licence: licence, ShardSamples: 2,
		Owner: ledger.KeyID(key.Public().(ed25519.PublicKey))})
	if err != nil {
		t.Fatal(err)
	}
	sm, err := dspub.Sign(key, &p.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	nonce, err := c.Nonce(ctx, n.ID(who))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := ledger.SignTx(key, n.ChainID, nonce+1, ledger.DatasetPublished{Manifest: string(sm.Envelope)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubmitWait(ctx, tx); err != nil {
		t.Fatalf("publish %s: %v", name, err)
	}
	return sm.Digest
}
