package devnet_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/internal/devnet"
)

// TestGuideChatRequest: the chat request the kept network's guide prints
// is one the inference node it starts answers: a valid chat completion
// naming the model ID the guide's serve command gives (a request without
// "model" is refused with 400), and the guide says where its receipt
// bundle is.
func TestGuideChatRequest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := devnet.Prepare(ctx, devnet.Options{Dir: t.TempDir(), Repo: "../..", InProcess: true, Keep: true, Trainers: 1, MinTrainers: 1, PretrainSteps: 1})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := n.WriteGuide(&b, strings.Repeat("ab", 32)); err != nil {
		t.Fatal(err)
	}
	var serve []string
	var body string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, "fedtune serve ") {
			serve = strings.Fields(l)
		}
		if strings.HasPrefix(l, "curl ") {
			_, after, ok := strings.Cut(l, " -d '")
			if !ok || !strings.HasSuffix(after, "'") {
				t.Fatalf("curl line without a quoted body: %s", l)
			}
			body = strings.TrimSuffix(after, "'")
		}
	}
	i := slices.Index(serve, "--model-id")
	if i < 0 || i+1 >= len(serve) {
		t.Fatalf("the guide's serve command names no --model-id: %q\n%s", serve, b.String())
	}
	req, apiErr := inference.DecodeRequest(inference.ChatCompletions, []byte(body))
	if apiErr != nil {
		t.Fatalf("the guide's chat request %s is refused: %v", body, apiErr.Message)
	}
	if req.Model != serve[i+1] {
		t.Errorf("the guide's chat request asks for model %q, its serve command serves %q", req.Model, serve[i+1])
	}
	if !strings.Contains(b.String(), "model.path: "+n.BaseModel+" and eval.data: eval.jsonl as job-2.yaml does") {
		t.Errorf("the guide does not say how to run the other example jobs on the network:\n%s", b.String())
	}
	if !strings.Contains(b.String(), "round cancel "+n.NextJobName+" --reason ") {
		t.Errorf("the guide does not say how to cancel the next job:\n%s", b.String())
	}
	if !strings.Contains(b.String(), "REQUEST-HASH.json: the answer's bundle") {
		t.Errorf("the guide does not say what REQUEST-HASH is:\n%s", b.String())
	}
}

// TestPrepareRefusesJobNeedingMoreTrainers: a job whose trainers.min is
// above the devnet's trainers is refused before anything is built, naming
// both numbers, instead of waiting forever for its first round.
func TestPrepareRefusesJobNeedingMoreTrainers(t *testing.T) {
	dir := t.TempDir()
	_, err := devnet.Prepare(context.Background(), devnet.Options{Dir: dir, Repo: "../..", InProcess: true, Job: "configs/jobs/krum-robust.yaml", Trainers: 3})
	if err == nil || !strings.Contains(err.Error(), "needs at least 5 trainers") || !strings.Contains(err.Error(), "the devnet runs 3") {
		t.Fatalf("Prepare of krum-robust.yaml on 3 trainers: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "models", "base")); !os.IsNotExist(err) {
		t.Errorf("the refused devnet built a base model first (%v)", err)
	}
}
