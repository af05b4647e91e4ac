package ledger

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/dsse"
)

// publishedTx signs a DatasetPublished of a fixed manifest by a's key.
func publishedTx(t testing.TB, a *actor) []byte {
	t.Helper()
	m := dspub.Manifest{Version: dspub.Version, Name: "golden-set", Format: dspub.FormatInstruct, Licence: "CC-BY-4.0 OR MIT", Card: hexDigest("card"),
		Owner: a.id, Samples: 5, Bytes: 50, Root: hexDigest("root"), Leaves: hexDigest("leaves"),
		Shards: []dspub.Shard{{Digest: hexDigest("s0"), First: 0, Samples: 4, Bytes: 40}, {Digest: hexDigest("s1"), First: 4, Samples: 1, Bytes: 10}}}
	sm, err := dspub.Sign(a.key, &m)
	if err != nil {
		t.Fatal(err)
	}
	return a.sign(t, DatasetPublished{Manifest: string(sm.Envelope)})
}

// TestDatasetPublishedGolden pins the DatasetPublished encoding (-update
// rewrites testdata/tx_published.golden).
func TestDatasetPublishedGolden(t *testing.T) {
	c := newCast()
	env := publishedTx(t, c.trainers[0])
	tx, err := DecodeTx(env)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for _, e := range [][]byte{env,
		c.coord.sign(t, JobRegistered{JobID: "pub", Recipe: RoundRecipe{Strategy: "fedavg", Compression: "none", MinTrainers: 1, Aggregators: []string{c.agg.id},
			Licences: []string{"CC-BY-4.0", "MIT"}, Published: []PublishedRef{{Digest: hexDigest("p"), Samples: 5}}, RangeSeed: 9, RangeSamples: 2}}),
		c.coord.sign(t, RoundOpened{JobID: "pub", Round: 1, ConfigDigest: hexDigest("c"), BaseModel: hexDigest("m"), Strategy: "fedavg",
			Trainers: []string{c.trainers[1].id}, Deadline: t0.Add(time.Hour), Ranges: []TrainerRange{{Trainer: c.trainers[1].id, Dataset: hexDigest("p"), First: 2, End: 4}}}),
		c.trainers[1].sign(t, UpdateSubmitted{JobID: "pub", Round: 1, UpdateDigest: hexDigest("u"), DatasetDigest: hexDigest("p"), Samples: 2,
			Ranges: []SampleRange{{Dataset: hexDigest("p"), First: 2, End: 4}}}),
	} {
		tx, err := DecodeTx(e)
		if err != nil {
			t.Fatal(err)
		}
		h := TxHash(e)
		got += fmt.Sprintf("%s %s %s\n", tx.Body.TxType(), hex.EncodeToString(h[:]), e)
	}
	path := filepath.Join("testdata", "tx_published.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestDatasetPublishedGolden -update)", err)
	}
	if got != string(want) {
		t.Fatalf("DatasetPublished encoding changed:\ngot\n%s\nwant\n%s", got, want)
	}
	sm, err := tx.Body.(DatasetPublished).Decode()
	if err != nil || sm.Name != "golden-set" {
		t.Fatalf("decoded manifest %+v, %v", sm, err)
	}
}

func TestDatasetPublishedStrict(t *testing.T) {
	c := newCast()
	a := c.trainers[0]
	env := publishedTx(t, a)
	e, err := DecodeEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func([]byte) []byte{
		"unknown field": func(p []byte) []byte { return bytes.Replace(p, []byte(`"body":{`), []byte(`"body":{"x":1,`), 1) },
		"repeated field": func(p []byte) []byte {
			return bytes.Replace(p, []byte(`"body":{"manifest":`), []byte(`"body":{"manifest":"","manifest":`), 1)
		},
		"case-folded": func(p []byte) []byte { return bytes.Replace(p, []byte(`"manifest"`), []byte(`"Manifest"`), 1) },
		"manifest edited": func(p []byte) []byte {
			return bytes.Replace(p, []byte(`dataset-publication`), []byte(`dataset-publicatiom`), 1)
		},
	} {
		t.Run(name, func(t *testing.T) {
			p := edit(e.Payload)
			if bytes.Equal(p, e.Payload) {
				t.Fatal("edit changed nothing")
			}
			forged := SignEnvelope(a.key, PayloadType, p).Encode()
			if _, err := DecodeTx(forged); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	// A manifest signed by another key than its keyid says is refused
	// by the FSM (the stateless check cannot know the owner's key), but
	// a keyid that is not the owner is refused here.
	other := newActor("other", RoleTrainer)
	m := dspub.Manifest{Version: 1, Name: "x", Format: "text", Licence: "MIT", Owner: a.id, Samples: 1, Bytes: 1, Root: hexDigest("r"), Leaves: hexDigest("l"),
		Shards: []dspub.Shard{{Digest: hexDigest("s"), Samples: 1, Bytes: 1}}}
	bad := dsse.Sign(other.key, dspub.PayloadType, mustJSON(m)).Encode()
	if _, err := SignTx(a.key, testChain, 9, DatasetPublished{Manifest: string(bad)}); err == nil || !strings.Contains(err.Error(), "keyid") {
		t.Fatalf("manifest signed by a non-owner: %v", err)
	}
}
