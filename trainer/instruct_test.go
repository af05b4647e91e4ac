package trainer

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model"
)

// llama2Config is a tokenizer_config.json with a small Llama-2-style chat
// template.
const llama2Config = `{"bos_token": "<s>", "eos_token": "</s>", "chat_template": "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"}`

const instructTrain = "../datasets/testdata/instruct/train.jsonl"

// TestEngineBackendInstruct trains a LoRA round on instruction data: the
// records are rendered with the model's chat template and packed, the step
// is masked, the update is repeatable, and Gorgonia refuses masked batches.
func TestEngineBackendInstruct(t *testing.T) {
	dir, cfg := tinyModel(t)
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(llama2Config), 0o644); err != nil {
		t.Fatal(err)
	}
	ds, ok := ReadInstruct(instructTrain)
	if !ok {
		t.Fatalf("ReadInstruct(%s) refused the instruction set", instructTrain)
	}
	if _, ok := ReadInstruct("../datasets/testdata/shards/trainer-1.jsonl"); ok {
		t.Fatal("ReadInstruct took plain JSONL for instruction data")
	}
	lc := model.LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"q_proj", "v_proj"}}
	ad, err := model.NewAdapter(cfg, lc, 7)
	if err != nil {
		t.Fatal(err)
	}
	train := model.TrainConfig{LoRA: &lc, Steps: 3, Batch: 2, SeqLen: 64, LR: 1e-2, ClipNorm: 1, Schedule: model.ScheduleConstant, Seed: 3}
	task := func() Task {
		return Task{ModelDir: dir, Adapter: ad, OutDir: t.TempDir(), Compression: "none", Train: train}
	}
	b, err := NewBackend(DeviceHost)
	if err != nil {
		t.Fatal(err)
	}
	data := Data{Dataset: ds, Instruct: true}
	u1, err := b.Fit(context.Background(), task(), data)
	if err != nil {
		t.Fatal(err)
	}
	u2, err := b.Fit(context.Background(), task(), data)
	if err != nil {
		t.Fatal(err)
	}
	if u1.Steps != 3 || !(u1.Loss > 0) || u1.Digest != u2.Digest {
		t.Fatalf("updates %+v and %+v", u1, u2)
	}
	plain, err := b.Fit(context.Background(), task(), Data{Dataset: ds})
	if err != nil {
		t.Fatal(err)
	}
	if plain.Digest == u1.Digest {
		t.Fatal("instruction training gave the plain-text update")
	}
	if _, err := (&GorgoniaBackend{}).Fit(context.Background(), task(), data); err == nil || !strings.Contains(err.Error(), "cannot train instruction data") {
		t.Fatalf("Gorgonia on instruction data: %v", err)
	}
}
