package ledger

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestPAE(t *testing.T) {
	// The example from the DSSE protocol spec.
	got := string(PAE("http://example.com/HelloWorld", []byte("hello world")))
	if want := "DSSEv1 29 http://example.com/HelloWorld 11 hello world"; got != want {
		t.Fatalf("PAE = %q, want %q", got, want)
	}
	if got := string(PAE("", nil)); got != "DSSEv1 0  0 " {
		t.Fatalf("empty PAE = %q", got)
	}
}

func TestEnvelope(t *testing.T) {
	a := newActor("a", RoleCoordinator)
	raw, err := SignTx(a.key, testChain, 1, ModelRegistered{Digest: hexDigest("m"), Name: "m", Licence: "mit", Source: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(raw), `{"payloadType":"application/vnd.fedtune.tx+json","payload":"`) {
		t.Fatalf("envelope %s", raw)
	}
	e, err := DecodeEnvelope(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.Encode(), raw) {
		t.Fatal("re-encoding differs")
	}
	if err := e.Verify(a.key.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	tx, err := DecodeTx(raw)
	if err != nil {
		t.Fatal(err)
	}
	if tx.Signer != a.id || tx.Nonce != 1 || tx.ChainID != testChain || tx.Hash != TxHash(raw) {
		t.Fatalf("tx %+v", tx)
	}
	if b, ok := tx.Body.(ModelRegistered); !ok || b.Licence != "mit" {
		t.Fatalf("body %#v", tx.Body)
	}
	// Another key does not verify it.
	if err := verifyEnvelope(e, newActor("b", "").key.Public().(ed25519.PublicKey)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("verify with other key: %v", err)
	}
	if err := ValidateBasic(raw); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]string{
		"two signatures": `{"payloadType":"x","payload":"","signatures":[{"keyid":"a","sig":""},{"keyid":"b","sig":""}]}`,
		"wrong type":     `{"payloadType":"x","payload":"","signatures":[{"keyid":"a","sig":""}]}`,
		"reordered":      `{"payload":"","payloadType":"x","signatures":[]}`,
		"url base64":     `{"payloadType":"x","payload":"-_-_","signatures":[]}`,
		"not json":       `nope`,
		"two objects":    `{"payloadType":"x","payload":"","signatures":[]}{}`,
	} {
		if err := ValidateBasic([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSignTxRejectsBadBodies(t *testing.T) {
	a := newActor("a", RoleTrainer)
	for name, body := range map[string]TxBody{
		"no digest":  DatasetRegistered{Name: "d", Licence: "l", Source: "s", Samples: 1, Root: testDatasetRoot},
		"upper hex":  DatasetRegistered{Digest: strings.ToUpper(hexDigest("d")), Name: "d", Licence: "l", Source: "s", Samples: 1, Root: testDatasetRoot},
		"no root":    DatasetRegistered{Digest: hexDigest("d"), Name: "d", Licence: "l", Source: "s", Samples: 1},
		"short root": DatasetRegistered{Digest: hexDigest("d"), Name: "d", Licence: "l", Source: "s", Samples: 1, Root: testDatasetRoot[:62]},
		"upper root": DatasetRegistered{Digest: hexDigest("d"), Name: "d", Licence: "l", Source: "s", Samples: 1, Root: strings.ToUpper(hexDigest("r"))},
		"no samples": UpdateSubmitted{JobID: "j", Round: 1, UpdateDigest: hexDigest("u"), DatasetDigest: hexDigest("d")},
		"commitment without step root": UpdateSubmitted{JobID: "j", Round: 1, UpdateDigest: hexDigest("u"), DatasetDigest: hexDigest("d"), Samples: 1,
			Commitment: &TrainingCommitment{InputsDigest: hexDigest("i"), Steps: 1}},
		"commitment without inputs": UpdateSubmitted{JobID: "j", Round: 1, UpdateDigest: hexDigest("u"), DatasetDigest: hexDigest("d"), Samples: 1,
			Commitment: &TrainingCommitment{Steps: 1, StepRoot: hexDigest("r")}},
		"commitment to no steps": UpdateSubmitted{JobID: "j", Round: 1, UpdateDigest: hexDigest("u"), DatasetDigest: hexDigest("d"), Samples: 1,
			Commitment: &TrainingCommitment{InputsDigest: hexDigest("i"), StepRoot: hexDigest("r")}},
		"commitment to too many steps": UpdateSubmitted{JobID: "j", Round: 1, UpdateDigest: hexDigest("u"), DatasetDigest: hexDigest("d"), Samples: 1,
			Commitment: &TrainingCommitment{InputsDigest: hexDigest("i"), Steps: MaxCommittedSteps + 1, StepRoot: hexDigest("r")}},
		"no trainers":     RoundOpened{JobID: "j", ConfigDigest: hexDigest("c"), BaseModel: hexDigest("b"), Strategy: "s", Deadline: t0},
		"no deadline":     RoundOpened{JobID: "j", ConfigDigest: hexDigest("c"), BaseModel: hexDigest("b"), Strategy: "s", Trainers: []string{a.id}},
		"dup trainer":     RoundOpened{JobID: "j", ConfigDigest: hexDigest("c"), BaseModel: hexDigest("b"), Strategy: "s", Trainers: []string{a.id, a.id}, Deadline: t0},
		"negative weight": RoundCommitted{JobID: "j", ModelDigest: hexDigest("m"), Strategy: "s", Contributors: []Contribution{{Trainer: a.id, UpdateDigest: hexDigest("u"), Weight: -1}}},
		"no contributors": RoundCommitted{JobID: "j", ModelDigest: hexDigest("m"), Strategy: "s"},
		"bad role":        MemberAdded{PublicKey: a.pubHex(), Role: "boss"},
		"pem key":         MemberAdded{PublicKey: "-----BEGIN PUBLIC KEY-----", Role: RoleTrainer},
		"control char":    RoundFailed{JobID: "j\x00", Reason: "r"},
		"no reason":       RoundFailed{JobID: "j"},
		"eval NaN":        RoundEvaluated{JobID: "j", Round: 1, ModelDigest: hexDigest("m"), EvalDigest: hexDigest("e"), MeanNLL: math.NaN(), Tokens: 1},
		"eval Inf score": RoundEvaluated{JobID: "j", Round: 1, ModelDigest: hexDigest("m"), EvalDigest: hexDigest("e"), MeanNLL: 1, Tokens: 1,
			Scores: []ContributionScore{{Trainer: a.id, LossRemoved: math.Inf(-1)}}},
		"eval no tokens": RoundEvaluated{JobID: "j", Round: 1, ModelDigest: hexDigest("m"), EvalDigest: hexDigest("e"), MeanNLL: 1},
		"eval round 0":   RoundEvaluated{JobID: "j", ModelDigest: hexDigest("m"), EvalDigest: hexDigest("e"), MeanNLL: 1, Tokens: 1},
		"eval score twice": RoundEvaluated{JobID: "j", Round: 1, ModelDigest: hexDigest("m"), EvalDigest: hexDigest("e"), MeanNLL: 1, Tokens: 1,
			Scores: []ContributionScore{{Trainer: a.id}, {Trainer: a.id}}},
	} {
		if _, err := SignTx(a.key, testChain, 1, body); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
	if _, err := SignTx(a.key, testChain, 0, RoundFailed{JobID: "j", Reason: "r"}); err == nil {
		t.Error("nonce 0 signed")
	}
}
