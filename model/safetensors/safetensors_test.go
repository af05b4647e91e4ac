package safetensors

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func sample(t *testing.T) []Tensor {
	t.Helper()
	a, err := FromFloat32("model.b", F32, []int{2, 2}, []float32{1, -2, 3.5, 0})
	if err != nil {
		t.Fatal(err)
	}
	b, err := FromFloat32("model.a", BF16, []int{3}, []float32{1, 0.5, -4})
	if err != nil {
		t.Fatal(err)
	}
	c, err := FromFloat32("lm_head<&>", F16, []int{}, []float32{2})
	if err != nil {
		t.Fatal(err)
	}
	return []Tensor{a, b, c}
}

func TestCanonicalGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := Encode(&buf, sample(t), nil); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "canonical.safetensors")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("canonical encoding changed:\n got %q\nwant %q", buf.Bytes(), want)
	}
	n := binary.LittleEndian.Uint64(buf.Bytes())
	if n%8 != 0 {
		t.Fatalf("header length %d not a multiple of 8", n)
	}
	hdr := string(buf.Bytes()[8 : 8+n])
	if !strings.HasPrefix(hdr, `{"__metadata__":{"format":"pt"},"`) || strings.Contains(strings.TrimRight(hdr, " "), " ") {
		t.Fatalf("header not canonical: %q", hdr)
	}
}

func TestRoundTripAndDigest(t *testing.T) {
	ts := sample(t)
	dir := t.TempDir()
	canon := filepath.Join(dir, "canon.safetensors")
	sum, err := WriteFile(canon, ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	dig, err := Digest(ts)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(canon)
	fileSum := sha256.Sum256(raw)
	if sum != dig || hex.EncodeToString(fileSum[:]) != dig {
		t.Fatalf("digest %s, WriteFile %s, sha256sum %x", dig, sum, fileSum)
	}
	// The same tensors with other metadata, or none: different files,
	// the same digest.
	withMeta := filepath.Join(dir, "meta.safetensors")
	if _, err := WriteFile(withMeta, ts, map[string]string{"num_samples": "7", "format": "pt"}); err != nil {
		t.Fatal(err)
	}
	noMeta := filepath.Join(dir, "nometa.safetensors")
	if _, err := WriteFile(noMeta, ts, map[string]string{}); err != nil {
		t.Fatal(err)
	}
	bare := filepath.Join(dir, "bare.safetensors")
	{
		// No "__metadata__" key at all, as older fedtune and other
		// writers produce.
		var specs []string
		var data []byte
		for _, x := range []Tensor{ts[2], ts[1], ts[0]} { // sorted by name
			specs = append(specs, fmt.Sprintf(`%q:{"dtype":"%s","shape":%s,"data_offsets":[%d,%d]}`,
				x.Name, x.DType, strings.ReplaceAll(fmt.Sprint(x.Shape), " ", ","), len(data), len(data)+len(x.Data)))
			data = append(data, x.Data...)
		}
		if err := os.WriteFile(bare, build("{"+strings.Join(specs, ",")+"}", data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{canon, withMeta, noMeta, bare} {
		f, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		d, err := f.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if d != dig {
			t.Errorf("%s: digest %s, want %s", p, d, dig)
		}
		got, err := f.Float32s("model.a")
		if err != nil {
			t.Fatal(err)
		}
		if want := []float32{1, 0.5, -4}; !equal(got, want) {
			t.Errorf("model.a = %v, want %v", got, want)
		}
		got, _ = f.Float32s("model.b")
		if want := []float32{1, -2, 3.5, 0}; !equal(got, want) {
			t.Errorf("model.b = %v, want %v", got, want)
		}
		if p == withMeta && f.Metadata()["num_samples"] != "7" {
			t.Errorf("metadata = %v", f.Metadata())
		}
		if p == canon && !maps.Equal(f.Metadata(), map[string]string{"format": "pt"}) {
			t.Errorf("canonical metadata = %v, want format pt", f.Metadata())
		}
		if p == bare && f.Metadata() != nil {
			t.Errorf("bare file metadata = %v, want none", f.Metadata())
		}
		f.Close()
	}
}

func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDTypeConversions(t *testing.T) {
	vals := []float32{0, 1, -1, 0.1, 65504, 1e-3, float32(math.Inf(1)), -3.140625}
	for _, d := range []DType{F32, F16, BF16, F64} {
		b, err := EncodeFloat32(d, nil, vals)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float32, len(vals))
		if err := DecodeFloat32(d, out, b); err != nil {
			t.Fatal(err)
		}
		for i := range vals {
			tol := map[DType]float64{F32: 0, F64: 0, F16: 1e-3, BF16: 8e-3}[d]
			if math.IsInf(float64(vals[i]), 0) {
				if !math.IsInf(float64(out[i]), 1) {
					t.Errorf("%s: inf -> %v", d, out[i])
				}
				continue
			}
			if diff := math.Abs(float64(out[i] - vals[i])); diff > tol*math.Abs(float64(vals[i])) {
				t.Errorf("%s: %v -> %v", d, vals[i], out[i])
			}
		}
	}
	if got := Float32ToBF16(float32(math.NaN())); math.Float32frombits(uint32(got)<<16) == math.Float32frombits(uint32(got)<<16) {
		t.Errorf("NaN became %#x", got)
	}
}

// build makes a file from a raw header and data.
func build(hdr string, data []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(len(hdr)))
	b.WriteString(hdr)
	b.Write(data)
	return b.Bytes()
}

func TestBadInput(t *testing.T) {
	good := build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8))
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "shorter than the 8-byte header length"},
		{"truncated header", good[:20], "runs past the end"},
		{"truncated data", good[:len(good)-3], `"a": data_offsets [0, 8] run past the end`},
		{"not an object", build(`[1]     `, nil), "not a JSON object"},
		{"unknown dtype", build(`{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)), `"a": unknown dtype "Q4"`},
		{"missing field", build(`{"a":{"dtype":"F32","shape":[2]}}`, make([]byte, 8)), "needs dtype, shape and data_offsets"},
		{"unknown field", build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}`, make([]byte, 8)), "bad entry"},
		{"size mismatch", build(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)), "F32[3] needs 12"},
		{"overlap", build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), "overlap"},
		{"gap", build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), "gap in the data buffer"},
		{"trailing data", build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 8)), "data buffer is 8 bytes but tensors cover 4"},
		{"negative offset", build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, nil), "invalid"},
		{"negative dim", build(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}`, nil), "invalid dimension"},
		{"huge shape", build(`{"a":{"dtype":"F32","shape":[2147483647,2147483647,2147483647],"data_offsets":[0,0]}}`, nil), "too large"},
		{"duplicate", build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), "duplicate tensor name"},
		{"bad metadata", build(`{"__metadata__":{"k":1}}`, nil), "__metadata__ must map strings"},
		{"metadata not an object", build(`{"__metadata__":["format","pt"]}`, nil), "__metadata__ must map strings"},
		{"metadata a string", build(`{"__metadata__":"pt"}`, nil), "__metadata__ must map strings"},
		{"metadata nested", build(`{"__metadata__":{"format":{"pt":true}}}`, nil), "__metadata__ must map strings"},
		{"metadata twice", build(`{"__metadata__":{"format":"pt"},"__metadata__":{"format":"pt"}}`, nil), "duplicate __metadata__"},
		{"metadata unterminated", build(`{"__metadata__":{"format":"pt"`, nil), "header JSON"},
		// A key twice: encoding/json kept the last, other readers the first.
		{"duplicate metadata key", build(`{"__metadata__":{"fedtune.kind":"delta","fedtune.kind":"weights"}}`, nil), `duplicate field "fedtune.kind"`},
		{"metadata keys differ in case", build(`{"__metadata__":{"fedtune.kind":"delta","FEDTUNE.KIND":"weights"}}`, nil), `differ only in case`},
		{"entry field twice", build(`{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), `"a": bad entry: duplicate field "dtype"`},
		{"entry field in another case", build(`{"a":{"DTYPE":"F16","dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), `"a": bad entry: unknown field "DTYPE"`},
		{"invalid UTF-8", build("{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", make([]byte, 4)), "not valid UTF-8"},
		{"huge header", func() []byte { b := make([]byte, 16); binary.LittleEndian.PutUint64(b, 1<<40); return b }(), "exceeds"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.safetensors", bytes.NewReader(tc.file), int64(len(tc.file)))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrFormat) {
				t.Errorf("error %v does not wrap ErrFormat", err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "x.safetensors") {
				t.Errorf("error %q, want it to name the file and contain %q", err, tc.want)
			}
		})
	}
	if _, err := Parse("ok", bytes.NewReader(good), int64(len(good))); err != nil {
		t.Fatal(err)
	}
}

func TestWriteFileLeavesNothingOnError(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.safetensors")
	_, err := WriteFile(p, []Tensor{{Name: "a", DType: F32, Shape: []int{2}, Data: make([]byte, 4)}}, nil)
	if err == nil {
		t.Fatal("short data accepted")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Fatalf("left %v behind", ents)
	}
}

func FuzzParse(f *testing.F) {
	var buf bytes.Buffer
	a, _ := FromFloat32("a", F32, []int{2}, []float32{1, 2})
	b, _ := FromFloat32("b", BF16, []int{1, 1}, []float32{3})
	_ = Encode(&buf, []Tensor{a, b}, map[string]string{"k": "v"})
	f.Add(buf.Bytes())
	f.Add(build(`{"a":{"dtype":"F16","shape":[],"data_offsets":[0,2]}}`, []byte{0, 60}))
	f.Add(build(`{"__metadata__":{"fedtune.kind":"delta","fedtune.kind":"weights"},"a":{"dtype":"F16","shape":[],"data_offsets":[0,2]}}`, []byte{0, 60}))
	f.Add(build(`{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[],"data_offsets":[0,2]}}`, []byte{0, 60}))
	f.Add(build(`{"__metadata__":["format","pt"],"a":{"dtype":"F16","shape":[],"data_offsets":[0,2]}}`, []byte{0, 60}))
	f.Add(build(`{"__metadata__":{"format":1},"a":{"dtype":"F16","shape":[],"data_offsets":[0,2]}}`, []byte{0, 60}))
	f.Add(build(`{"__metadata__":null,"a":{"dtype":"F16","shape":[],"data_offsets":[0,2]}}`, []byte{0, 60}))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz", bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		if md := file.Metadata(); md != nil {
			// Metadata that parsed has one reading: no key twice, none
			// twice up to case.
			seen := map[string]string{}
			for k := range md {
				if prev, ok := seen[strings.ToLower(k)]; ok {
					t.Fatalf("metadata keys %q and %q both accepted", prev, k)
				}
				seen[strings.ToLower(k)] = k
			}
		}
		var ts []Tensor
		for _, info := range file.Tensors() {
			raw, err := file.ReadRaw(info.Name)
			if err != nil {
				t.Fatalf("valid header but unreadable tensor %q: %v", info.Name, err)
			}
			if info.DType.IsFloat() {
				if _, err := file.Float32s(info.Name); err != nil {
					t.Fatal(err)
				}
			}
			ts = append(ts, Tensor{Name: info.Name, DType: info.DType, Shape: info.Shape, Data: raw})
		}
		d1, err := file.Digest()
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := Encode(&out, ts, nil); err != nil {
			t.Fatal(err)
		}
		again, err := Parse("again", bytes.NewReader(out.Bytes()), int64(out.Len()))
		if err != nil {
			t.Fatalf("re-encoded file does not parse: %v", err)
		}
		d2, _ := again.Digest()
		sum := sha256.Sum256(out.Bytes())
		if d1 != d2 || d2 != hex.EncodeToString(sum[:]) {
			t.Fatalf("digests differ: %s %s %x", d1, d2, sum)
		}
	})
}

// TestBF16s: BF16s returns a BF16 tensor's values as stored (their
// widening is what Float32s reads) and refuses a tensor of another dtype.
func TestBF16s(t *testing.T) {
	vals := []float32{1, -2.5, float32(math.Inf(-1)), 3.1415927, 0, -0, 1e-30, 65504}
	bt, err := FromFloat32("w", BF16, []int{2, 4}, vals)
	if err != nil {
		t.Fatal(err)
	}
	ft, err := FromFloat32("f", F32, []int{8}, vals)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Encode(&buf, []Tensor{bt, ft}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Parse("mem", bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.BF16s("w")
	if err != nil {
		t.Fatal(err)
	}
	wide, _ := f.Float32s("w")
	for i, v := range vals {
		if got[i] != Float32ToBF16(v) || math.Float32bits(BF16ToFloat32(got[i])) != math.Float32bits(wide[i]) {
			t.Errorf("value %d: BF16s %#04x (widened %g), want %#04x (Float32s %g)", i, got[i], BF16ToFloat32(got[i]), Float32ToBF16(v), wide[i])
		}
	}
	if _, err := f.BF16s("f"); err == nil || !strings.Contains(err.Error(), "not BF16") {
		t.Errorf("BF16s of an F32 tensor: %v", err)
	}
	if _, err := f.BF16s("nope"); err == nil {
		t.Error("BF16s of a missing tensor: no error")
	}
}
