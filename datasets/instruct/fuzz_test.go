package instruct

import (
	"testing"
)

// FuzzDecode checks that Decode never panics and that what it accepts
// renders and encodes with the plain renderer.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}`))
	f.Add([]byte(`{"instruction":"i","input":"x","output":"o"}` + "\n"))
	f.Add([]byte(`{"prompt":[{"role":"user","content":"a"}],"completion":[{"role":"assistant","content":"b"}]}`))
	f.Add([]byte("\xef\xbb\xbf{\"prompt\":\"p\",\"completion\":\"c\"}\r\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, _, err := Decode(data, "f.jsonl")
		if err != nil {
			return
		}
		for _, r := range recs {
			if _, err := Encode(r, Plain{}, tok); err != nil {
				// An assistant turn of empty content renders as "\n": never empty.
				t.Fatalf("%s: %v", r.ID, err)
			}
		}
	})
}
