package ledger

import (
	"crypto/ed25519"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestCheckDisclosureFits: the default policy's max_tx_bytes holds a
// spot-checked update of some steps but not of MaxDisclosedSteps; the
// refusal names both sizes and the most steps that fit, and that count is
// exact.
func TestCheckDisclosureFits(t *testing.T) {
	max := DefaultPolicy().MaxTxBytes
	recipe := func(steps int) *RoundRecipe {
		return &RoundRecipe{Published: []PublishedRef{{Digest: hexDigest("p1"), Samples: 9}, {Digest: hexDigest("p2"), Samples: 9}},
			Verify: &VerifyRule{Fraction: 1, By: []string{hexDigest("v")}, Steps: steps}}
	}
	for _, tc := range []struct {
		name string
		r    *RoundRecipe
		max  int
		want string // "" fits
	}{
		{"no verify", &RoundRecipe{}, 1024, ""},
		{"20 steps", recipe(20), max, ""},
		{"2048 steps", recipe(2048), max, ""},
		{"4096 steps on the default policy", recipe(MaxDisclosedSteps), max, fmt.Sprintf("above the chain's policy max_tx_bytes %d: at most ", max)},
		{"4096 steps on a 1 MiB policy", recipe(MaxDisclosedSteps), MaxEnvelopeBytes, ""},
		{"one step on a 2 KiB policy", recipe(1), 2048, ""},
		{"one step on the smallest policy", recipe(1), 1024, "no update of the job fits"},
		{"20 steps on the smallest policy", recipe(20), 1024, "above the chain's policy max_tx_bytes 1024"},
		{"no steps", recipe(0), max, "recipe.verify.steps 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckDisclosureFits(testChain, "a-job", tc.r, tc.max)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
			m := regexp.MustCompile(`at most (\d+) steps per update fit`).FindStringSubmatch(err.Error())
			if m == nil {
				return
			}
			fit, _ := strconv.Atoi(m[1])
			if fit > 0 {
				if n, err := DisclosedUpdateBytes(testChain, "a-job", tc.r, fit); err != nil || n > tc.max {
					t.Fatalf("%d steps said to fit take %d bytes (%v), above %d", fit, n, err, tc.max)
				}
			}
			if n, err := DisclosedUpdateBytes(testChain, "a-job", tc.r, fit+1); err != nil || n <= tc.max {
				t.Fatalf("%d steps, one more than said to fit, take %d bytes (%v), within %d", fit+1, n, err, tc.max)
			}
		})
	}
}

// TestDisclosedUpdateBytesBounds: a real trainer's UpdateSubmitted of a
// job, disclosing its steps, is no larger than DisclosedUpdateBytes says.
func TestDisclosedUpdateBytesBounds(t *testing.T) {
	r := &RoundRecipe{Published: []PublishedRef{{Digest: hexDigest("p1"), Samples: 1000}}, Verify: &VerifyRule{Fraction: 1, By: []string{hexDigest("v")}, Steps: 300}}
	ds := make([]string, 300)
	for i := range ds {
		ds[i] = hexDigest(fmt.Sprint("step ", i))
	}
	root, err := StepDigestsRoot(ds)
	if err != nil {
		t.Fatal(err)
	}
	key := ed25519.NewKeyFromSeed([]byte(strings.Repeat("k", ed25519.SeedSize)))
	env, err := SignTx(key, testChain, 123456, UpdateSubmitted{JobID: "a-job", Round: 17, UpdateDigest: hexDigest("u"), DatasetDigest: hexDigest("p1"), Samples: 2400,
		Metrics:    map[string]float64{"loss": 2.718281828459045, "steps": 300},
		Ranges:     []SampleRange{{Dataset: hexDigest("p1"), First: 200, End: 500}},
		Commitment: &TrainingCommitment{InputsDigest: hexDigest("in"), Steps: 300, StepRoot: root, StepDigests: ds}})
	if err != nil {
		t.Fatal(err)
	}
	bound, err := DisclosedUpdateBytes(testChain, "a-job", r, 300)
	if err != nil {
		t.Fatal(err)
	}
	if len(env) > bound {
		t.Fatalf("a real update takes %d bytes, above the bound %d", len(env), bound)
	}
	t.Logf("300 steps: real update %d bytes, bound %d", len(env), bound)
}

// TestDisclosedUpdateBytesExact: the size DisclosedUpdateBytes adds up
// from one step is that of the update built and signed in full, at every
// change of the step count's digits and at the limit.
func TestDisclosedUpdateBytesExact(t *testing.T) {
	r := &RoundRecipe{Published: []PublishedRef{{Digest: hexDigest("p1"), Samples: 9}, {Digest: hexDigest("p2"), Samples: 9}}}
	for _, n := range []int{1, 2, 3, 9, 10, 11, 99, 100, 101, 999, 1000, 1001, 2919, 2920, MaxDisclosedSteps} {
		env, err := disclosedUpdate(testChain, "a-job", r, n)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DisclosedUpdateBytes(testChain, "a-job", r, n)
		if err != nil {
			t.Fatal(err)
		}
		if got != len(env) {
			t.Fatalf("%d steps: DisclosedUpdateBytes says %d bytes, the update built in full is %d", n, got, len(env))
		}
	}
	for _, n := range []int{0, MaxDisclosedSteps + 1} {
		if _, err := DisclosedUpdateBytes(testChain, "a-job", r, n); err == nil {
			t.Fatalf("%d steps: no error", n)
		}
	}
}
