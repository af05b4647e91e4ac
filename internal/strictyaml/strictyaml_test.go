package strictyaml

import (
	"errors"
	"strings"
	"testing"
)

type cfg struct {
	Name  string `yaml:"name"`
	Count int    `yaml:"count"`
	Inner struct {
		On bool `yaml:"on"`
	} `yaml:"inner"`
}

func TestDecode(t *testing.T) {
	cases := []struct {
		name, data, want string
		is               error
	}{
		{"ok", "name: a\ncount: 2\n", "", nil},
		{"unknown key", "name: a\ncolour: red\n", `f.yaml:2: unknown key "colour"`, nil},
		{"nested unknown key", "inner:\n  on: true\n  off: false\n", `f.yaml:3: unknown key "off"`, nil},
		{"wrong type", "name: a\ncount: many\n", "f.yaml:2: cannot unmarshal", nil},
		{"two errors", "count: x\nbad: 1\n", "f.yaml:1: cannot unmarshal", nil},
		{"syntax", "name: [a\n", "f.yaml:", nil},
		{"empty", "", "f.yaml: the file is empty", ErrEmpty},
		{"two documents", "name: a\n---\nname: b\n", "more than one YAML document", ErrMultipleDocuments},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg{Count: 7}
			err := Decode("f.yaml", []byte(tc.data), &c)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.Name != "a" || c.Count != 2 {
					t.Fatalf("decoded %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v does not wrap %v", err, tc.is)
			}
		})
	}
}

func TestDefaultsKept(t *testing.T) {
	c := cfg{Count: 7}
	if err := Decode("f.yaml", []byte("name: a\n"), &c); err != nil {
		t.Fatal(err)
	}
	if c.Count != 7 {
		t.Fatalf("default lost: %+v", c)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("name: a\ncount: 2\ninner:\n  on: true\n"))
	f.Add([]byte("- [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c cfg
		err := Decode("fuzz.yaml", data, &c)
		if err != nil && !strings.HasPrefix(err.Error(), "fuzz.yaml") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}
