package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func seedTxs(f *testing.F) [][]byte {
	c := newCast()
	return append(spotCheckTxs(f, c),
		publishedTx(f, c.trainers[1]),
		c.coord.sign(f, ModelRegistered{Digest: hexDigest("m"), Name: "m", Licence: "l", Source: "s"}),
		c.coord.sign(f, ModelRegistered{Digest: hexDigest("m"), Name: "m", Licence: "l", Source: "s", Config: hexDigest("c"), Tokenizer: hexDigest("t")}),
		c.coord.sign(f, RoundOpened{JobID: "j", Round: 1, ConfigDigest: hexDigest("c"), BaseModel: hexDigest("m"), Strategy: "fedavg",
			Trainers: []string{c.trainers[0].id}, Deadline: t0.Add(time.Hour)}),
		c.trainers[0].sign(f, UpdateSubmitted{JobID: "j", Round: 1, UpdateDigest: hexDigest("u"), DatasetDigest: hexDigest("d"), Samples: 3,
			Metrics: map[string]float64{"loss": 0.5}}),
		c.trainers[0].sign(f, UpdateSubmitted{JobID: "j", Round: 1, UpdateDigest: hexDigest("u"), DatasetDigest: hexDigest("d"), Samples: 3,
			Commitment: &TrainingCommitment{InputsDigest: hexDigest("i"), Steps: 3, StepRoot: hexDigest("r")}}),
		c.agg.sign(f, RoundCommitted{JobID: "j", Round: 1, ModelDigest: hexDigest("n"), Strategy: "fedavg", Params: map[string]string{"k": "v"},
			Contributors: []Contribution{{Trainer: c.trainers[0].id, UpdateDigest: hexDigest("u"), Weight: 1}}}),
		c.admin.sign(f, MemberAdded{PublicKey: newActor("z", "").pubHex(), Role: RoleTrainer}),
		c.trainers[0].sign(f, DatasetRegistered{Digest: hexDigest("d"), Name: "d", Licence: "CC0-1.0", Source: "s", Samples: 3,
			Root: hexDigest("root"), Bytes: 42}),
		c.admin.sign(f, NodeAdded{PublicKey: newActor("n", "").pubHex(), RaftAddress: "10.0.0.4:7000", GRPCAddress: "[::1]:7100", Name: "n4"}),
		c.admin.sign(f, NodePromoted{ID: newActor("n", "").id}),
		c.admin.sign(f, NodeRemoved{ID: newActor("n", "").id, Reason: "retired"}),
		c.coord.sign(f, JobRegistered{JobID: "j", Recipe: RoundRecipe{Strategy: "fedavgm", Params: map[string]string{"server_momentum": "0.9"},
			Clip: 1, NoiseMultiplier: 1.1, Compression: "int8", Int8Block: 64, MinTrainers: 1, MaxTrainers: 3, MaxSamples: 100,
			Aggregators: []string{c.agg.id}, InitialAdapter: hexDigest("a"), BaseModel: hexDigest("base"),
			RequireAttestations: []AttestationRequirement{{Kind: KindPIIScan, By: string(RoleAuditor)}}}}),
		c.auditor.sign(f, attestedBy(f, c.auditor.key, hexDigest("d"), testPredicate())),
		c.coord.sign(f, RoundEvaluated{JobID: "j", Round: 1, ModelDigest: hexDigest("n"), EvalDigest: hexDigest("e"), MeanNLL: 1.5, Tokens: 10,
			Scores: []ContributionScore{{Trainer: c.trainers[0].id, LossRemoved: 0.25}}}),
		c.coord.sign(f, JobCancelled{JobID: "j", Reason: "launched on the wrong network"}),
	)
}

func FuzzDecodeEnvelope(f *testing.F) {
	for _, tx := range seedTxs(f) {
		f.Add(tx)
	}
	f.Add([]byte(`{"payloadType":"","payload":"","signatures":[]}`))
	f.Add([]byte(`{"payloadType":"a","payload":"YQ==","signatures":[{"keyid":"k","sig":""}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeEnvelope(data)
		if err != nil {
			return
		}
		// Only the canonical form decodes, so encoding gives the input back.
		if !bytes.Equal(e.Encode(), data) {
			t.Fatalf("decode/encode is not the identity on %q", data)
		}
		_ = ValidateBasic(data)
		e.Verify(newActor("a", "").key.Public().(ed25519.PublicKey))
	})
}

func FuzzDecodeTx(f *testing.F) {
	for _, tx := range seedTxs(f) {
		f.Add(tx)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tx, err := DecodeTx(data)
		if err != nil {
			return
		}
		if tx.Hash != TxHash(data) || tx.Body == nil || TxRoles[tx.Body.TxType()] == "" {
			t.Fatalf("decoded tx %+v", tx)
		}
	})
}

func FuzzDecodeBlock(f *testing.F) {
	f.Add(EncodeBlock(&Block{Header: *goldenHeader(), Txs: seedTxs(f)[:3]}))
	f.Add(EncodeBlock(&Block{Header: Header{Height: 0}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBlock(data)
		if err != nil {
			return
		}
		if !bytes.Equal(EncodeBlock(b), data) {
			t.Fatal("block decode/encode is not the identity")
		}
		h, err := DecodeHeader(EncodeHeader(&b.Header))
		if err != nil || *h != b.Header {
			t.Fatalf("header round trip: %v", err)
		}
		_ = TxRoot(b.Txs)
	})
}

func FuzzParseGenesis(f *testing.F) {
	f.Add([]byte(validGenesis))
	f.Add([]byte(validGenesis + "policy:\n  block_interval: 1s\n  checkpoint_quorum: 1\n"))
	f.Add([]byte("chain_id: x\nmembers: []\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := ParseGenesis("fuzz.yaml", data)
		if err != nil {
			return
		}
		if err := g.Validate(); err != nil {
			t.Fatalf("parsed genesis does not validate: %v", err)
		}
		// Re-parsing the same bytes hashes the same.
		g2, err := ParseGenesis("fuzz.yaml", data)
		if err != nil || g2.Hash() != g.Hash() {
			t.Fatal("genesis hash is not stable")
		}
	})
}

// FuzzRoundEvaluatedBody: a RoundEvaluated body that decodes has finite
// values, at least one token, no trainer scored twice, and re-encodes to
// a body that decodes to the same value (one reading).
func FuzzRoundEvaluatedBody(f *testing.F) {
	tr := newCast().trainers
	f.Add([]byte(`{"job_id":"j","round":1,"model_digest":"` + hexDigest("m") + `","eval_digest":"` + hexDigest("e") +
		`","mean_nll":2.5,"tokens":10,"scores":[{"trainer":"` + tr[0].id + `","loss_removed":-0.25}]}`))
	f.Add([]byte(`{"job_id":"j","round":1,"model_digest":"` + hexDigest("m") + `","eval_digest":"` + hexDigest("e") +
		`","mean_nll":1e999,"tokens":0,"scores":[{"trainer":"` + tr[0].id + `","loss_removed":1},{"trainer":"` + tr[0].id + `","loss_removed":2}]}`))
	f.Add([]byte(`{"job_id":"j","round":1,"mean_nll":NaN}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		body, err := DecodeTxBody(TypeRoundEvaluated, data)
		if err != nil {
			return
		}
		ev := body.(RoundEvaluated)
		if math.IsNaN(ev.MeanNLL) || math.IsInf(ev.MeanNLL, 0) || ev.MeanNLL < 0 || ev.Tokens == 0 || ev.Round == 0 {
			t.Fatalf("accepted %+v", ev)
		}
		seen := map[string]bool{}
		for _, s := range ev.Scores {
			if seen[s.Trainer] || math.IsNaN(s.LossRemoved) || math.IsInf(s.LossRemoved, 0) {
				t.Fatalf("accepted score %+v in %+v", s, ev)
			}
			seen[s.Trainer] = true
		}
		raw, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeTxBody(TypeRoundEvaluated, raw)
		if err != nil || !reflect.DeepEqual(again, body) {
			t.Fatalf("re-encoded %s decodes to %+v, %v; want %+v", raw, again, err, body)
		}
	})
}

// FuzzUpdateStepDigests: a node's GetTx reply (outside bytes) read as an
// update's tx never panics, and gives digests only when it is the tx the
// update's record names, with the record's commitment.
func FuzzUpdateStepDigests(f *testing.F) {
	for _, tx := range seedTxs(f) {
		f.Add(tx, false)
		f.Add(tx, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, bind bool) {
		h := TxHash(data)
		u := Update{Trainer: strings.Repeat("a", 64), UpdateDigest: strings.Repeat("b", 64), TxHash: hex.EncodeToString(h[:])}
		job, round := "job", uint64(1)
		if tx, err := DecodeTx(data); err == nil && bind {
			// The record the tx's own body makes, so that it can be read.
			if b, ok := tx.Body.(UpdateSubmitted); ok {
				u.Trainer, u.UpdateDigest, u.Commitment, job, round = tx.Signer, b.UpdateDigest, b.Commitment, b.JobID, b.Round
			}
		}
		ds, err := UpdateStepDigests(data, job, round, &u)
		if err != nil {
			return
		}
		tx, derr := DecodeTx(data)
		if derr != nil {
			t.Fatalf("read step digests from a tx that does not decode: %v", derr)
		}
		b, ok := tx.Body.(UpdateSubmitted)
		if !ok || tx.Signer != u.Trainer || b.UpdateDigest != u.UpdateDigest || b.JobID != job || b.Round != round {
			t.Fatalf("read step digests from tx %+v that is not update %+v's", tx, u)
		}
		if b.Commitment != nil && !slices.Equal(ds, b.Commitment.StepDigests) {
			t.Fatal("step digests are not the tx's")
		}
	})
}
