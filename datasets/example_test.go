package datasets_test

import (
	"fmt"
	"testing/fstest"

	"github.com/fedtune/fedtune/datasets"
)

// byteEnc encodes text as its bytes, like tokenizer.Byte.
type byteEnc struct{}

func (byteEnc) Encode(s string) []int {
	ids := make([]int, len(s))
	for i := range len(s) {
		ids[i] = int(s[i])
	}
	return ids
}

func Example() {
	fsys := fstest.MapFS{"qa.jsonl": {Data: []byte(
		`{"prompt":"Q: 1+1=","response":"A: 2"}` + "\n" +
			`{"text":"plain text"}` + "\n")}}
	d, err := datasets.Load("qa.jsonl", datasets.Options{FS: fsys})
	if err != nil {
		panic(err)
	}
	for _, s := range d.Samples {
		fmt.Printf("%s %q\n", s.ID, s.Text)
	}
	tokens := datasets.Tokenize(d, byteEnc{})
	windows := datasets.Windows(tokens, 8)
	fmt.Println(len(tokens), "tokens,", len(windows), "windows of 9")
	b := datasets.NewBatcher(windows, 2, 1)
	fmt.Println(len(b.Next()), "windows in a batch")
	// Output:
	// qa.jsonl:1 "Q: 1+1=\nA: 2"
	// qa.jsonl:2 "plain text"
	// 24 tokens, 2 windows of 9
	// 2 windows in a batch
}

func ExampleDataset_Split() {
	d := &datasets.Dataset{Name: "d"}
	for i := range 10 {
		d.Samples = append(d.Samples, datasets.Sample{ID: fmt.Sprintf("d.txt:%d", i+1), Text: "x"})
	}
	train, eval := d.Split(0.2, 42)
	fmt.Println(train.Name, len(train.Samples)+len(eval.Samples), len(eval.Samples) > 0)
	// Output: d/train 10 true
}
