package aggregator_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/model/safetensors"
)

// Two trainers send their fine-tuned weights; FedAvg weights them by their
// sample counts (30 and 10) and writes the new global model.
func ExampleFedAvg() {
	dir, err := os.MkdirTemp("", "fedavg-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	write := func(name string, vals []float32) string {
		t, err := safetensors.FromFloat32("lora_A", safetensors.F32, []int{2, 2}, vals)
		if err != nil {
			log.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if _, err := safetensors.WriteFile(path, []safetensors.Tensor{t}, nil); err != nil {
			log.Fatal(err)
		}
		return path
	}
	a := write("a.safetensors", []float32{1, 2, 3, 4})
	b := write("b.safetensors", []float32{5, 6, 7, 8})

	res, err := aggregator.Aggregate(context.Background(), aggregator.Request{
		Strategy: &aggregator.FedAvg{},
		Inputs: []aggregator.Input{
			{Path: a, Weight: 30, ContributorID: "trainer-a"},
			{Path: b, Weight: 10, ContributorID: "trainer-b"},
		},
		Out: filepath.Join(dir, "global.safetensors"),
	})
	if err != nil {
		log.Fatal(err)
	}
	f, err := safetensors.Open(res.Path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	vals, _ := f.Float32s("lora_A")
	fmt.Println(vals)
	fmt.Println(res.Weights["trainer-a"], res.Weights["trainer-b"])
	// Output:
	// [2 3 4 5]
	// 0.75 0.25
}
