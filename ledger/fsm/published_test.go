package fsm

import (
	"crypto/ed25519"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/dsse"
	"github.com/fedtune/fedtune/ledger"
)

// testPublication signs a well-formed publication manifest named name
// for owner with key (which need not be owner's: a forgery).
func testPublication(t testing.TB, key ed25519.PrivateKey, owner, name, licence string) string {
	t.Helper()
	m := dspub.Manifest{Version: dspub.Version, Name: name, Format: dspub.FormatText, Licence: licence, Owner: owner,
		Samples: 3, Bytes: 30, Root: digest("root " + name), Leaves: digest("leaves " + name),
		Shards: []dspub.Shard{{Digest: digest("s0 " + name), First: 0, Samples: 2, Bytes: 20}, {Digest: digest("s1 " + name), First: 2, Samples: 1, Bytes: 10}}}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	env := dsse.Sign(key, dspub.PayloadType, mustJSON(m))
	env.Signatures[0].KeyID = owner // a forgery claims the owner's key ID
	return string(env.Encode())
}

func TestDatasetPublished(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	a, b := c.trainers[0], c.trainers[1]
	good := testPublication(t, a.key, a.id, "wiki-en", "CC-BY-SA-4.0")
	ch.mustApply(a.sign(t, ledger.DatasetPublished{Manifest: good}))
	sm, err := dspub.Decode([]byte(good), nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ch.fsm.Dataset(sm.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Published || d.Name != "wiki-en" || d.Licence != "CC-BY-SA-4.0" || d.Owner != a.id || len(d.Shards) != 2 || d.Manifest != good || d.Root != sm.Root {
		t.Fatalf("recorded %+v", d)
	}
	if byShard, err := ch.fsm.Dataset(sm.Shards[1].Digest); err != nil || byShard.Digest != sm.Digest {
		t.Fatalf("Dataset(a shard's digest) = %+v, %v; want the published dataset's record", byShard, err)
	}
	if _, err := ch.fsm.Dataset(digest("no blob")); !errors.Is(err, ledger.ErrRecordNotFound) {
		t.Fatalf("Dataset(unknown) = %v", err)
	}
	outsider := newActor("outsider", ledger.RoleTrainer)
	for _, tc := range []struct {
		name string
		tx   []byte
		code ledger.Code
		want string
	}{
		{"duplicate digest", b.sign(t, ledger.DatasetPublished{Manifest: good}), ledger.CodeForbidden, "owner"},
		{"duplicate digest by owner", a.sign(t, ledger.DatasetPublished{Manifest: good}), ledger.CodeAlreadyExists, "already recorded"},
		{"duplicate name", a.sign(t, ledger.DatasetPublished{Manifest: testPublication(t, a.key, a.id, "wiki-en", "MIT")}), ledger.CodeAlreadyExists, "named \"wiki-en\""},
		{"another's manifest", b.sign(t, ledger.DatasetPublished{Manifest: testPublication(t, a.key, a.id, "other", "MIT")}), ledger.CodeForbidden, "owner"},
		{"forged signature", b.sign(t, ledger.DatasetPublished{Manifest: testPublication(t, a.key, b.id, "forged", "MIT")}), ledger.CodeBadSignature, "signature"},
		{"non-member", outsider.sign(t, ledger.DatasetPublished{Manifest: testPublication(t, outsider.key, outsider.id, "mine", "MIT")}), ledger.CodeUnknownSigner, "not a member"},
		{"wrong role", c.coord.sign(t, ledger.DatasetPublished{Manifest: testPublication(t, c.coord.key, c.coord.id, "coord", "MIT")}), ledger.CodeForbidden, "needs role trainer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := ch.propose(tc.tx)
			err := res.Results[0].Err
			var te *ledger.TxError
			if !errors.As(err, &te) || te.Code != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want code %v saying %q", err, tc.code, tc.want)
			}
		})
	}
	// A second dataset under another name is fine.
	ch.mustApply(b.sign(t, ledger.DatasetPublished{Manifest: testPublication(t, b.key, b.id, "wiki-de", "CC0-1.0")}))
}

func TestDatasetPublishedStateless(t *testing.T) {
	c := newCast()
	a := c.trainers[0]
	for name, m := range map[string]string{
		"empty":        "",
		"not dsse":     "{}",
		"bad licence":  testPublicationRaw(t, a, func(s string) string { return strings.Replace(s, `"MIT"`, `"mit"`, 1) }),
		"not manifest": string(dsse.Sign(a.key, "text/plain", []byte("hi")).Encode()),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ledger.SignTx(a.key, testChain, 1, ledger.DatasetPublished{Manifest: m}); err == nil {
				t.Fatal("SignTx accepted a bad manifest")
			}
		})
	}
}

func testPublicationRaw(t *testing.T, a *actor, edit func(string) string) string {
	env, err := dsse.Decode([]byte(testPublication(t, a.key, a.id, "x", "MIT")))
	if err != nil {
		t.Fatal(err)
	}
	return string(dsse.Sign(a.key, dspub.PayloadType, []byte(edit(string(env.Payload)))).Encode())
}

func TestLicenceRefusedCommit(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	base := digest("base model")
	a, b := c.trainers[0], c.trainers[1]
	dsOK, dsNC := digest("ok data"), digest("nc data")
	ch.mustApply(c.coord.sign(t, ledger.ModelRegistered{Digest: base, Name: "m", Licence: "MIT", Source: "s"}),
		a.sign(t, ledger.DatasetRegistered{Digest: dsOK, Name: "ok", Licence: "CC-BY-4.0 OR MIT", Source: "s", Samples: 10, Root: testDatasetRoot}),
		b.sign(t, ledger.DatasetRegistered{Digest: dsNC, Name: "nc", Licence: "CC-BY-NC-4.0", Source: "s", Samples: 10, Root: testDatasetRoot}))
	rc := c.testRecipe()
	rc.Licences = []string{"MIT", "Apache-2.0"}
	ch.mustApply(c.coord.sign(t, ledger.JobRegistered{JobID: "lic", Recipe: rc}),
		c.coord.sign(t, ledger.RoundOpened{JobID: "lic", Round: 1, ConfigDigest: digest("cfg"), BaseModel: base, Strategy: "fedavg",
			Trainers: []string{a.id, b.id}, Deadline: t0.Add(24 * 3600e9)}))
	ch.mustApply(a.sign(t, ledger.UpdateSubmitted{JobID: "lic", Round: 1, UpdateDigest: digest("ua"), DatasetDigest: dsOK, Samples: 5}),
		b.sign(t, ledger.UpdateSubmitted{JobID: "lic", Round: 1, UpdateDigest: digest("ub"), DatasetDigest: dsNC, Samples: 5}))
	both := ledger.RoundCommitted{JobID: "lic", Round: 1, ModelDigest: digest("new"), Strategy: "fedavg", Params: rc.CommitParams(),
		Contributors: []ledger.Contribution{{Trainer: a.id, UpdateDigest: digest("ua"), Weight: 0.5}, {Trainer: b.id, UpdateDigest: digest("ub"), Weight: 0.5}}}
	res := ch.propose(c.agg.sign(t, both))
	if err := res.Results[0].Err; err == nil || !strings.Contains(err.Error(), `licence "CC-BY-NC-4.0"`) || !strings.Contains(err.Error(), "contributors[1]") {
		t.Fatalf("a commit counting a CC-BY-NC update in a job accepting MIT, Apache-2.0: %v", err)
	}
	reason := rc.LicenceRefusal(dsNC, "nc", "CC-BY-NC-4.0")
	one := both
	one.Contributors = []ledger.Contribution{{Trainer: a.id, UpdateDigest: digest("ua"), Weight: 1}}
	ch.mustApply(c.agg.sign(t, ledger.UpdateRejected{JobID: "lic", Round: 1, UpdateDigest: digest("ub"), Reason: reason}), c.agg.sign(t, one))
	r, err := ch.fsm.Round("lic", 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range r.Updates {
		if u.Trainer == b.id && (!u.Rejected || u.RejectReason != reason) {
			t.Fatalf("the refused update is recorded as %+v", u)
		}
	}
	if r.Status != ledger.StatusCommitted {
		t.Fatalf("round %s", r.Status)
	}
}

func TestRecipeLicences(t *testing.T) {
	c := newCast()
	for _, tc := range []struct {
		lic []string
		ok  bool
	}{{nil, true}, {[]string{"MIT", "CC-BY-4.0"}, true}, {[]string{"mit"}, false}, {[]string{"MIT", "MIT"}, false}, {[]string{"LicenseRef-x"}, true}} {
		rc := c.testRecipe()
		rc.Licences = tc.lic
		if err := rc.Validate(); (err == nil) != tc.ok {
			t.Errorf("licences %q: Validate = %v", tc.lic, err)
		}
	}
}

// publishedJob publishes a dataset of 40 samples under licence by
// trainer a, and registers job "pub" on it with the given accepted
// licences; it returns the dataset digest and the recipe.
func publishedJob(t *testing.T, c *cast, ch *chain, licence string, accepted []string) (string, ledger.RoundRecipe, error) {
	t.Helper()
	a := c.trainers[0]
	env := testPublication(t, a.key, a.id, "pub-"+licence, licence)
	sm, err := dspub.Decode([]byte(env), nil)
	if err != nil {
		t.Fatal(err)
	}
	ch.mustApply(a.sign(t, ledger.DatasetPublished{Manifest: env}),
		c.coord.sign(t, ledger.ModelRegistered{Digest: digest("base " + licence), Name: "m", Licence: "MIT", Source: "s"}))
	rc := c.testRecipe()
	rc.Licences = accepted
	rc.Published = []ledger.PublishedRef{{Digest: sm.Digest, Samples: sm.Samples}}
	rc.RangeSeed, rc.RangeSamples = 7, 1
	res := ch.propose(c.coord.sign(t, ledger.JobRegistered{JobID: "pub", Recipe: rc}))
	return sm.Digest, rc, res.Results[0].Err
}

func TestJobOnPublishedData(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	ds, rc, err := publishedJob(t, c, ch, "CC-BY-4.0", []string{"CC-BY-4.0"})
	if err != nil {
		t.Fatal(err)
	}
	b, cc := c.trainers[1], c.trainers[2] // neither has data of its own
	trainers := []string{b.id, cc.id}
	want, err := rc.Ranges(1, trainers)
	if err != nil {
		t.Fatal(err)
	}
	open := ledger.RoundOpened{JobID: "pub", Round: 1, ConfigDigest: digest("cfg"), BaseModel: digest("base CC-BY-4.0"), Strategy: "fedavg",
		Trainers: trainers, Deadline: t0.Add(24 * 3600e9), Ranges: want}
	// The coordinator gives b the range the seed gives c, and c b's.
	swapped := open
	swapped.Ranges = []ledger.TrainerRange{want[0], want[1]}
	swapped.Ranges[0].First, swapped.Ranges[1].First = want[1].First, want[0].First
	swapped.Ranges[0].End, swapped.Ranges[1].End = want[1].End, want[0].End
	for name, tc := range map[string]struct {
		body ledger.RoundOpened
		want string
	}{
		"swapped":   {swapped, "the recipe's seed gives"},
		"no ranges": {func() ledger.RoundOpened { o := open; o.Ranges = nil; return o }(), "gives 0 sample ranges"},
	} {
		t.Run(name, func(t *testing.T) {
			res := ch.propose(c.coord.sign(t, tc.body))
			if err := res.Results[0].Err; err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	ch.mustApply(c.coord.sign(t, open))
	mine, theirs := ledger.RangesOf(want, b.id), ledger.RangesOf(want, cc.id)
	sub := func(ranges []ledger.SampleRange, samples uint64) ledger.UpdateSubmitted {
		return ledger.UpdateSubmitted{JobID: "pub", Round: 1, UpdateDigest: digest("ub"), DatasetDigest: ds, Samples: samples, Ranges: ranges}
	}
	over := []ledger.SampleRange{{Dataset: ds, First: mine[0].First, End: mine[0].End + 1}}
	for name, tc := range map[string]struct {
		body ledger.UpdateSubmitted
		want string
	}{
		"another's range": {sub(theirs, 1), "assigned trainer"},
		"overlapping":     {sub(over, 1), "assigned trainer"},
		"no ranges":       {sub(nil, 1), "names 0 sample ranges"},
		"two ranges":      {sub(append(slices.Clone(mine), theirs...), 1), "names 2 sample ranges"},
		"more samples":    {sub(mine, mine[0].Size()+1), "more than the"},
	} {
		t.Run(name, func(t *testing.T) {
			res := ch.propose(b.sign(t, tc.body))
			if err := res.Results[0].Err; err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	ch.mustApply(b.sign(t, sub(mine, mine[0].Size())))
	r, err := ch.fsm.Round("pub", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Ranges) != 2 || len(r.Updates) != 1 || len(r.Updates[0].Ranges) != 1 || r.Updates[0].Ranges[0] != mine[0] {
		t.Fatalf("round %+v", r)
	}
}

func TestJobPublishedLicenceRefused(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	_, _, err := publishedJob(t, c, ch, "CC-BY-NC-SA-4.0", []string{"CC-BY-4.0", "MIT"})
	if err == nil || !strings.Contains(err.Error(), `recipe.published[0]`) || !strings.Contains(err.Error(), `licence "CC-BY-NC-SA-4.0"`) {
		t.Fatalf("a job on CC-BY-NC-SA data accepting CC-BY-4.0 and MIT: %v", err)
	}
}

// TestPublishedDatasetsPages: the listing of published datasets reads the
// name index in pages (by name, each page after the last name of the one
// before), carries each record with its attestations and its tx's
// position in its block, and ignores private datasets.
func TestPublishedDatasetsPages(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	a, b := c.trainers[0], c.trainers[1]
	// Published out of name order, two in one block.
	ch.mustApply(a.sign(t, ledger.DatasetPublished{Manifest: testPublication(t, a.key, a.id, "zeta", "MIT")}))
	ch.mustApply(b.sign(t, ledger.DatasetPublished{Manifest: testPublication(t, b.key, b.id, "beta", "MIT")}),
		a.sign(t, ledger.DatasetPublished{Manifest: testPublication(t, a.key, a.id, "alpha", "CC0-1.0")}))
	ch.mustApply(b.sign(t, ledger.DatasetPublished{Manifest: testPublication(t, b.key, b.id, "mid", "MIT")}))

	all, err := ch.fsm.PublishedDatasets("", 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range all.Datasets {
		names = append(names, d.Name)
		if !d.Published || d.Manifest == "" {
			t.Errorf("%s: %+v", d.Name, d.Dataset)
		}
	}
	if !slices.Equal(names, []string{"alpha", "beta", "mid", "zeta"}) || all.Next != "" {
		t.Fatalf("listing %v next %q", names, all.Next)
	}
	if all.Datasets[0].Height != all.Datasets[1].Height || all.Datasets[0].TxIndex != 1 || all.Datasets[1].TxIndex != 0 {
		t.Errorf("alpha at %d/%d, beta at %d/%d; want the same block, beta first", all.Datasets[0].Height, all.Datasets[0].TxIndex, all.Datasets[1].Height, all.Datasets[1].TxIndex)
	}
	var paged []string
	after := ""
	for range 10 {
		p, err := ch.fsm.PublishedDatasets(after, 1, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range p.Datasets {
			paged = append(paged, d.Name)
		}
		if p.Next == "" {
			break
		}
		after = p.Next
	}
	if !slices.Equal(paged, names) {
		t.Fatalf("pages of one: %v, want %v", paged, names)
	}
	// A byte bound ends a page early, after at least one record.
	p, err := ch.fsm.PublishedDatasets("", 100, 1)
	if err != nil || len(p.Datasets) != 1 || p.Next != "alpha" {
		t.Fatalf("a 1-byte page: %+v, %v", p, err)
	}
	if p, err := ch.fsm.PublishedDatasets("zeta", 100, 1<<20); err != nil || len(p.Datasets) != 0 || p.Next != "" {
		t.Fatalf("after the last: %+v, %v", p, err)
	}
}
