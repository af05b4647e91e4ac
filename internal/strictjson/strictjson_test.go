package strictjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

type inner struct {
	A int `json:"a"`
}

type doc struct {
	Name  string             `json:"name"`
	D     time.Duration      `json:"d,omitempty"`
	T     time.Time          `json:"t"`
	Raw   []byte             `json:"raw,omitempty"`
	Ptr   *uint64            `json:"ptr,omitempty"`
	Str   int64              `json:"str,omitempty,string"`
	N     uint64             `json:"n,omitempty"`
	M     map[string]float64 `json:"m,omitempty"`
	In    inner              `json:"in"`
	List  []inner            `json:"list,omitempty"`
	Plain string
}

func TestUnmarshal(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string // want "" means accepted
	}{
		{"ok", `{"name":"a","n":1,"m":{"x":1.5},"in":{"a":2},"list":[{"a":1}],"Plain":"p"}`, ""},
		{"encoding/json forms", `{"d":1500000000,"t":"2026-01-02T03:04:05.6+02:00","raw":"AAE=","ptr":7,"str":"-3"}`, ""},
		{"white space", " {\"name\" : \"a\" }\n", ""},
		{"escaped name", `{"n\u0061me":"a"}`, ""},
		{"case variant", `{"name":"benign-data","NAME":"evil-data"}`, `unknown field "NAME" at the top level (field names are case-sensitive: did you mean "name"?)`},
		{"case variant only", `{"Name":"evil"}`, `unknown field "Name" at the top level (field names are case-sensitive: did you mean "name"?)`},
		{"go field name in other case", `{"plain":"x"}`, `unknown field "plain" at the top level (field names are case-sensitive: did you mean "Plain"?)`},
		{"nested case variant", `{"in":{"A":1}}`, `unknown field "A" at /in (field names are case-sensitive: did you mean "a"?)`},
		{"case variant in a list", `{"list":[{"a":1},{"A":1}]}`, `unknown field "A" at /list/1`},
		{"duplicate", `{"name":"benign-data","name":"evil-data"}`, `duplicate field "name" at the top level`},
		{"escaped duplicate", `{"name":"a","n\u0061me":"b"}`, `duplicate field "name" at the top level`},
		{"duplicate map key", `{"m":{"x":1,"x":2}}`, `duplicate field "x" at /m`},
		{"case variant map keys", `{"m":{"loss":1,"LOSS":2}}`, `fields "loss" and "LOSS" at /m differ only in case`},
		{"nested duplicate", `{"in":{"a":1,"a":2}}`, `duplicate field "a" at /in`},
		{"unknown", `{"name":"a","extra":1}`, `unknown field "extra" at the top level`},
		{"trailing", `{"name":"a"} {}`, "trailing data after the JSON value"},
		{"invalid UTF-8", "{\"name\":\"\xff\"}", "invalid UTF-8"},
		{"lone surrogate", `{"name":"\ud800"}`, "surrogate"},
		{"wrong type", `{"n":"1"}`, "unmarshal JSON string into Go uint64"},
		{"negative unsigned", `{"n":-1}`, "unmarshal JSON number -1 into Go uint64"},
		{"empty", ``, "EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d doc
			err := Unmarshal([]byte(tc.in), &d)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// FuzzUnmarshal checks that whatever Unmarshal accepts has one reading:
// encoding/json reads the same value, the value re-encodes to bytes that
// read the same again, and no object in the input repeats a name or holds
// two names equal up to case.
func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"name":"a","n":1,"m":{"x":1.5},"in":{"a":2},"list":[{"a":1}],"Plain":"p"}`))
	f.Add([]byte(`{"name":"benign-data","NAME":"evil-data"}`))
	f.Add([]byte(`{"name":"a","name":"b"}`))
	f.Add([]byte(`{"m":{"x":1,"X":2}}`))
	f.Add([]byte(`{"d":1500000000,"t":"2026-01-02T03:04:05.6+02:00","raw":"AAE=","ptr":7,"str":"-3"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var d doc
		if Unmarshal(data, &d) != nil {
			return
		}
		var v1 doc
		if err := json.Unmarshal(data, &v1); err != nil {
			t.Fatalf("strict decoder accepted what encoding/json refuses (%v): %q", err, data)
		}
		// Values are compared by their canonical encoding (an empty and an
		// absent map are the same value).
		canon, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if c1, _ := json.Marshal(v1); !bytes.Equal(c1, canon) {
			t.Fatalf("two readings of %q: strict %s, encoding/json %s", data, canon, c1)
		}
		var again doc
		if err := Unmarshal(canon, &again); err != nil {
			t.Fatalf("re-encoded %q: %v", canon, err)
		}
		if c2, _ := json.Marshal(again); !bytes.Equal(c2, canon) {
			t.Fatalf("re-encoded %q reads as %s", canon, c2)
		}
		if err := CheckNames(data); err != nil {
			t.Fatalf("accepted %q although %v", data, err)
		}
	})
}

func TestCheckNames(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":1,"b":{"c":[{"d":1,"D":2}]}}`: `fields "d" and "D" at /b/c/0 differ only in case`,
		`{"a":1,"a":2}`:                     `duplicate field "a" at the top level`,
		`{"a":{"a":1},"b":{"a":1}}`:         "",
		`[{"k":1},{"k":2}]`:                 "",
		`{"\u00e9":1,"\u00c9":2}`:           `fields "é" and "É" at the top level differ only in case`,
		`{"sk":1,"\u017fK":2}`:              `fields "sk" and "ſK" at the top level differ only in case`,
		`{"k":1,"\u212a":2}`:                "fields \"k\" and \"\u212a\" at the top level differ only in case",
		`{"a":[1,{"x":{}}],"A":0}`:          `fields "a" and "A" at the top level differ only in case`,
	} {
		err := CheckNames([]byte(in))
		if got := fmt.Sprint(err); (want == "" && err != nil) || (want != "" && got != want) {
			t.Errorf("CheckNames(%s) = %v, want %q", in, err, want)
		}
	}
}

// TestCheckNamesLargeObject: an object with many names is checked in linear
// time and still finds a case twin among them.
func TestCheckNamesLargeObject(t *testing.T) {
	var b strings.Builder
	b.WriteString("{")
	for i := range 100000 {
		fmt.Fprintf(&b, `"k%d":1,`, i)
	}
	ok := b.String()
	if err := CheckNames([]byte(ok + `"end":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := CheckNames([]byte(ok + `"K77777":1}`)); err == nil || !strings.Contains(err.Error(), `fields "k77777" and "K77777"`) {
		t.Fatalf("case twin among 100000 names: %v", err)
	}
	if err := CheckNames([]byte(ok + `"k5":1}`)); err == nil || !strings.Contains(err.Error(), `duplicate field "k5"`) {
		t.Fatalf("duplicate among 100000 names: %v", err)
	}
}

// TestEncodingJSONRoundTrip: whatever encoding/json writes (the form every
// signer uses), Unmarshal reads back to the same value.
func TestEncodingJSONRoundTrip(t *testing.T) {
	p := uint64(9)
	in := doc{Name: "n", N: 2, M: map[string]float64{"a": 0.1, "b": -1e-300}, In: inner{A: 3}, List: []inner{{A: 1}},
		Plain: "p", D: 90 * time.Minute, T: time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("", -3600)), Raw: []byte{0, 1, 2},
		Ptr: &p, Str: -42}
	js, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out doc
	if err := Unmarshal(js, &out); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	again, _ := json.Marshal(out)
	if !bytes.Equal(again, js) {
		t.Fatalf("round trip:\n%s\n%s", js, again)
	}
}
