package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/strictjson"
)

// rawPayload returns a payload for signer a with the given type and body
// JSON, written by hand so that tests can put anything in it.
func rawPayload(a *actor, nonce uint64, typ, body string) string {
	return fmt.Sprintf(`{"chain_id":%q,"signer":%q,"nonce":%d,"type":%q,"body":%s}`, testChain, a.id, nonce, typ, body)
}

// signRaw signs payload bytes as they are, over DSSE PAE.
func signRaw(a *actor, payload string) []byte {
	return SignEnvelope(a.key, PayloadType, []byte(payload)).Encode()
}

// TestDecodeTxOneReading checks that a signed payload that encoding/json
// would read in a way the signer may not have meant is refused with its
// reason, and that the hand-written canonical payload is accepted.
func TestDecodeTxOneReading(t *testing.T) {
	c := newCast()
	d := hexDigest("m")
	model := func(extra string) string {
		return `{"digest":"` + d + `","name":"benign-data","licence":"mit","source":"s"` + extra + `}`
	}
	update := func(metrics string) string {
		return `{"job_id":"j","round":1,"update_digest":"` + d + `","dataset_digest":"` + d + `","samples":3,"metrics":` + metrics + `}`
	}
	for _, tc := range []struct {
		name, payload string
		code          Code
		want          string
	}{
		{"canonical", rawPayload(c.coord, 1, TypeModelRegistered, model("")), "", ""},
		{"name and NAME", rawPayload(c.coord, 1, TypeModelRegistered, model(`,"NAME":"evil-data"`)), CodeMalformed,
			`ModelRegistered body: unknown field "NAME" at the top level (field names are case-sensitive: did you mean "name"?)`},
		{"only Name", rawPayload(c.coord, 1, TypeModelRegistered, strings.Replace(model(""), `"name"`, `"Name"`, 1)), CodeMalformed,
			`unknown field "Name"`},
		{"duplicate name", rawPayload(c.coord, 1, TypeModelRegistered, model(`,"name":"evil-data"`)), CodeMalformed,
			`payload: duplicate field "name" at /body`},
		{"escaped duplicate name", rawPayload(c.coord, 1, TypeModelRegistered, model(`,"n\u0061me":"evil-data"`)), CodeMalformed,
			`duplicate field "name"`},
		{"unknown body field", rawPayload(c.coord, 1, TypeModelRegistered, model(`,"owner":"x"`)), CodeMalformed,
			`unknown field "owner"`},
		{"duplicate payload nonce", strings.Replace(rawPayload(c.coord, 1, TypeModelRegistered, model("")), `"nonce":1`, `"nonce":1,"nonce":2`, 1),
			CodeMalformed, `payload: duplicate field "nonce" at the top level`},
		{"case variant payload field", strings.Replace(rawPayload(c.coord, 1, TypeModelRegistered, model("")), `"type"`, `"Type"`, 1),
			CodeMalformed, `payload: unknown field "Type"`},
		{"unknown payload field", strings.Replace(rawPayload(c.coord, 1, TypeModelRegistered, model("")), `"nonce":1`, `"nonce":1,"memo":"x"`, 1),
			CodeMalformed, `payload: unknown field "memo"`},
		{"metric keys differing in case", rawPayload(c.trainers[0], 1, TypeUpdateSubmitted, update(`{"loss":1,"LOSS":0.1}`)), CodeMalformed,
			`UpdateSubmitted body: fields "loss" and "LOSS" at /metrics differ only in case`},
		{"duplicate metric key", rawPayload(c.trainers[0], 1, TypeUpdateSubmitted, update(`{"loss":1,"loss":0.1}`)), CodeMalformed,
			`payload: duplicate field "loss" at /body/metrics`},
		{"lone surrogate", rawPayload(c.coord, 1, TypeModelRegistered, strings.Replace(model(""), "benign-data", `\ud800`, 1)), CodeMalformed,
			"surrogate"},
		{"bidi override in name", rawPayload(c.coord, 1, TypeModelRegistered, strings.Replace(model(""), "benign-data", `evil\u202Eatad`, 1)), CodeInvalid,
			`ModelRegistered: name "evil\u202eatad": bidi control U+202E at character 5 (byte 4)`},
		{"zero-width in source", rawPayload(c.coord, 1, TypeModelRegistered, strings.Replace(model(""), `"s"`, `"s\u200Bx"`, 1)), CodeInvalid,
			`source "s\u200bx": zero-width character U+200B at character 2 (byte 1)`},
		{"control in job ID", rawPayload(c.trainers[0], 1, TypeUpdateSubmitted, strings.Replace(update(`{}`), `"j"`, `"j\u0085"`, 1)), CodeInvalid,
			`job_id "j\u0085": control character U+0085 at character 2 (byte 1)`},
		{"BOM in metric key", rawPayload(c.trainers[0], 1, TypeUpdateSubmitted, update(`{"\uFEFFloss":1}`)), CodeInvalid,
			`metrics key "\ufeffloss": zero-width character U+FEFF at character 1 (byte 0)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			by := c.coord
			if strings.Contains(tc.payload, c.trainers[0].id) {
				by = c.trainers[0]
			}
			_, err := DecodeTx(signRaw(by, tc.payload))
			if tc.code == "" {
				if err != nil {
					t.Fatalf("canonical payload refused: %v", err)
				}
				return
			}
			if !errors.Is(err, &TxError{Code: tc.code}) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %s containing %q", err, tc.code, tc.want)
			}
		})
	}
}

// goldenTxs signs one tx of every type with the test cast's fixed keys.
func goldenTxs(t testing.TB) [][]byte {
	c := newCast()
	dl := time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("", 2*3600))
	return [][]byte{
		c.admin.sign(t, MemberAdded{PublicKey: newActor("z", "").pubHex(), Role: RoleTrainer, Name: "trainer-z <&> ü"}),
		c.admin.sign(t, MemberRemoved{ID: c.trainers[2].id, Reason: "left"}),
		c.coord.sign(t, ModelRegistered{Digest: hexDigest("m"), Name: "Llama 3.2 1B", Licence: "llama3.2", Source: "hf://meta", Config: hexDigest("cfg")}),
		c.trainers[0].sign(t, DatasetRegistered{Digest: hexDigest("d"), Name: "benign-data", Licence: "CC0-1.0", Source: "s", Samples: 3, Root: hexDigest("root"), Bytes: 42}),
		c.coord.sign(t, RoundOpened{JobID: "job-1", Round: 1, ConfigDigest: hexDigest("c"), BaseModel: hexDigest("m"), Strategy: "fedavg",
			Trainers: []string{c.trainers[0].id, c.trainers[1].id}, Deadline: dl}),
		c.trainers[0].sign(t, UpdateSubmitted{JobID: "job-1", Round: 1, UpdateDigest: hexDigest("u"), DatasetDigest: hexDigest("d"), Samples: 3,
			Metrics: map[string]float64{"loss": 0.5, "Accuracy": 1e-7, "n": 3}}),
		c.agg.sign(t, UpdateRejected{JobID: "job-1", Round: 1, UpdateDigest: hexDigest("u2"), Reason: "norm 7.5 > 5"}),
		c.agg.sign(t, RoundCommitted{JobID: "job-1", Round: 1, ModelDigest: hexDigest("n"), Strategy: "krum", Params: map[string]string{"f": "1", "m": "2"},
			Contributors: []Contribution{{Trainer: c.trainers[0].id, UpdateDigest: hexDigest("u"), Weight: 0.25}}}),
		c.agg.sign(t, RoundFailed{JobID: "job-2", Round: 7, Reason: "quorum not reached"}),
		c.trainers[1].sign(t, UpdateSubmitted{JobID: "job-1", Round: 1, UpdateDigest: hexDigest("u3"), DatasetDigest: hexDigest("d"), Samples: 2,
			Commitment: &TrainingCommitment{InputsDigest: hexDigest("inputs"), Steps: 5, StepRoot: hexDigest("steps")}}),
		c.auditor.sign(t, attestedBy(t, c.auditor.key, hexDigest("d"), testPredicate())),
		c.coord.sign(t, RoundEvaluated{JobID: "job-1", Round: 1, ModelDigest: hexDigest("n"), EvalDigest: hexDigest("eval"), MeanNLL: 2.625, Tokens: 4096,
			Scores: []ContributionScore{{Trainer: c.trainers[0].id, LossRemoved: 0.125}, {Trainer: c.trainers[1].id, LossRemoved: -1.5e-3}}}),
	}
}

// TestTxGolden pins the bytes and hash of one tx of every type: the strict
// decoder must accept every tx SignTx wrote before it, and SignTx must keep
// writing the same bytes (-update rewrites testdata/tx.golden, which breaks
// every existing chain).
func TestTxGolden(t *testing.T) {
	var got bytes.Buffer
	for _, env := range goldenTxs(t) {
		tx, err := DecodeTx(env)
		if err != nil {
			t.Fatalf("golden tx refused: %v", err)
		}
		h := TxHash(env)
		fmt.Fprintf(&got, "%s %s %s\n", tx.Body.TxType(), hex.EncodeToString(h[:]), env)
	}
	path := filepath.Join("testdata", "tx.golden")
	if *update {
		if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestTxGolden -update)", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("tx encoding changed:\ngot\n%s\nwant\n%s", got.Bytes(), want)
	}
}

// FuzzPayloadOneReading signs arbitrary payload bytes and checks that what
// DecodeTx accepts has exactly one reading: encoding/json reads the same
// payload and body, re-encoding the body canonically (SignTx) and decoding
// again gives the same value, and no object in the payload repeats a name
// or holds two names equal up to case.
func FuzzPayloadOneReading(f *testing.F) {
	c := newCast()
	signer := c.coord
	for _, env := range goldenTxs(f) {
		e, err := DecodeEnvelope(env)
		if err != nil {
			f.Fatal(err)
		}
		// Re-sign every payload as one signer, so that mutations keep the
		// signature's key ID equal to the payload's signer.
		var p map[string]any
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			f.Fatal(err)
		}
		body, _ := json.Marshal(p["body"])
		f.Add([]byte(rawPayload(signer, 1, p["type"].(string), string(body))))
	}
	model := `{"digest":"` + hexDigest("m") + `","name":"benign-data","licence":"mit","source":"s"`
	f.Add([]byte(rawPayload(signer, 1, TypeModelRegistered, model+`,"NAME":"evil-data"}`)))
	f.Add([]byte(rawPayload(signer, 1, TypeModelRegistered, model+`,"name":"evil-data"}`)))
	f.Add([]byte(rawPayload(signer, 1, TypeModelRegistered, model+`,"extra":1}`)))
	f.Add([]byte(rawPayload(signer, 1, TypeModelRegistered, strings.Replace(model, "benign", `\u202Eevil`, 1)+"}")))
	pub := signer.key.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, payload []byte) {
		tx, err := DecodeTx(SignEnvelope(signer.key, PayloadType, payload).Encode())
		if err != nil {
			return
		}
		canon, err := json.Marshal(tx.Body)
		if err != nil {
			t.Fatal(err)
		}
		if err := strictjson.CheckNames(payload); err != nil {
			t.Fatalf("accepted %q although %v", payload, err)
		}
		// encoding/json (case-insensitive, last duplicate wins) reads the same.
		var p payloadJSON
		if err := json.Unmarshal(payload, &p); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", payload, err)
		}
		if p.ChainID != tx.ChainID || p.Signer != tx.Signer || p.Nonce != tx.Nonce || p.Type != tx.Body.TxType() {
			t.Fatalf("two readings of payload %q: %+v and %+v", payload, p, tx)
		}
		lenient := reflect.New(reflect.TypeOf(tx.Body))
		if err := json.Unmarshal(p.Body, lenient.Interface()); err != nil {
			t.Fatalf("accepted body %q, which encoding/json refuses: %v", p.Body, err)
		}
		if l, _ := json.Marshal(lenient.Elem().Interface()); !bytes.Equal(l, canon) {
			t.Fatalf("two readings of body %q: %s and %s", p.Body, canon, l)
		}
		// The canonical encoding decodes to the same value.
		env, err := SignTx(signer.key, tx.ChainID, tx.Nonce, tx.Body)
		if err != nil {
			t.Fatalf("accepted body %s cannot be signed again: %v", canon, err)
		}
		again, err := DecodeTx(env)
		if err != nil {
			t.Fatalf("canonical form of %q refused: %v", payload, err)
		}
		if c2, _ := json.Marshal(again.Body); !bytes.Equal(c2, canon) || again.ChainID != tx.ChainID || again.Nonce != tx.Nonce {
			t.Fatalf("canonical form of %q reads as %s, want %s", payload, c2, canon)
		}
		if err := again.Envelope.Verify(pub); err != nil {
			t.Fatal(err)
		}
	})
}

// BenchmarkDecodeTx decodes one tx of every type (the strict decoder's cost
// on the leader's and every replica's path).
func BenchmarkDecodeTx(b *testing.B) {
	txs := goldenTxs(b)
	b.ReportAllocs()
	for b.Loop() {
		for _, env := range txs {
			if _, err := DecodeTx(env); err != nil {
				b.Fatal(err)
			}
		}
	}
}
