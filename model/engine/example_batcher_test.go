package engine_test

import (
	"context"
	"fmt"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/modeltest"
)

// A server starts one Batcher per model, adds each request with its own
// context and reads the request's stream to its last event.
func ExampleBatcher() {
	m, err := model.New(modeltest.TinyConfig(), 1)
	if err != nil {
		panic(err)
	}
	b, err := engine.NewBatcher(engine.NewHost().(engine.CacheDevice), m, engine.BatcherConfig{Slots: 4, MaxContext: 32})
	if err != nil {
		panic(err)
	}
	defer b.Close()
	stream, err := b.Add(context.Background(), []int{1, 2, 3}, model.GenerateConfig{MaxTokens: 5, Temperature: 0.7, Seed: 42})
	if err != nil {
		panic(err) // a bad request: answer 400
	}
	n := 0
	for tok := range stream {
		if tok.Finish != "" {
			fmt.Println(n, "tokens, finish:", tok.Finish, tok.Err)
			break
		}
		n++ // tok.ID is the next token
	}
	// Output: 5 tokens, finish: length <nil>
}
