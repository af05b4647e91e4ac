package model

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/fedtune/fedtune/model/safetensors"
)

// File names of a Hugging Face model folder.
const (
	ConfigFile      = "config.json"
	WeightsFile     = "model.safetensors"
	WeightsIndex    = "model.safetensors.index.json"
	EmbedName       = "model.embed_tokens.weight"
	FinalNormName   = "model.norm.weight"
	LMHeadName      = "lm_head.weight"
	LayerNamePrefix = "model.layers."
)

// ErrWeights is wrapped by every error about weights that do not fit the
// config (a missing, extra or misshapen tensor).
var ErrWeights = errors.New("model: weights do not match config")

// Tensor is one named weight: its shape and float32 values (row-major, in
// the layout Hugging Face saves, e.g. [out, in] for a linear layer).
//
// A tensor LoadBF16 read from a BF16 checkpoint holds its values as BF16
// instead, Data being nil: each element the top 16 bits of its float32
// (safetensors.BF16ToFloat32 widens it exactly). Such a tensor is frozen
// weights, read by the engine without a float32 copy; code that needs
// float32 values calls Float32s, or Model.Widened.
type Tensor struct {
	Shape []int
	Data  []float32
	// BF16 holds the values when Data is nil (LoadBF16); it must not be
	// modified (devices may read it in place).
	BF16 []uint16
}

// Len is the number of elements.
func (t *Tensor) Len() int {
	if t.Data == nil && t.BF16 != nil {
		return len(t.BF16)
	}
	return len(t.Data)
}

// Float32s returns the values as float32: Data itself, or a widened copy
// of BF16.
func (t *Tensor) Float32s() []float32 {
	if t.Data != nil || t.BF16 == nil {
		return t.Data
	}
	out := make([]float32, len(t.BF16))
	for i, b := range t.BF16 {
		out[i] = safetensors.BF16ToFloat32(b)
	}
	return out
}

// Clone returns a deep copy.
func (t *Tensor) Clone() *Tensor {
	return &Tensor{Shape: slices.Clone(t.Shape), Data: slices.Clone(t.Data), BF16: slices.Clone(t.BF16)}
}

// Model is a LLaMA-family decoder: its config and its weights, keyed by the
// tensor names of LlamaForCausalLM. It holds plain float32 slices so that
// other packages can read and write weights without Gorgonia.
type Model struct {
	Config  Config
	Tensors map[string]*Tensor
}

// Linear projection names within a layer, as PEFT's target_modules spell them.
var (
	attnProjs = []string{"q_proj", "k_proj", "v_proj", "o_proj"}
	mlpProjs  = []string{"gate_proj", "up_proj", "down_proj"}
)

// ProjName returns the full tensor name of projection proj in layer l.
func ProjName(l int, proj string) string {
	if slices.Contains(attnProjs, proj) {
		return fmt.Sprintf("%s%d.self_attn.%s.weight", LayerNamePrefix, l, proj)
	}
	return fmt.Sprintf("%s%d.mlp.%s.weight", LayerNamePrefix, l, proj)
}

// The RMSNorm weights within a layer, as NormName spells them.
const (
	InputNorm = "input_layernorm"          // before attention
	PostNorm  = "post_attention_layernorm" // before the MLP
)

// NormName returns the full tensor name of RMSNorm norm (InputNorm or
// PostNorm) in layer l.
func NormName(l int, norm string) string {
	return fmt.Sprintf("%s%d.%s.weight", LayerNamePrefix, l, norm)
}

// ProjShape returns the [out, in] shape of projection proj under c.
func (c *Config) ProjShape(proj string) ([]int, error) {
	d, hd := c.HiddenSize, c.HeadDimension()
	switch proj {
	case "q_proj":
		return []int{c.NumAttentionHeads * hd, d}, nil
	case "k_proj", "v_proj":
		return []int{c.KVHeads() * hd, d}, nil
	case "o_proj":
		return []int{d, c.NumAttentionHeads * hd}, nil
	case "gate_proj", "up_proj":
		return []int{c.IntermediateSize, d}, nil
	case "down_proj":
		return []int{d, c.IntermediateSize}, nil
	}
	return nil, fmt.Errorf("unknown projection %q (want one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)", proj)
}

// TensorShapes returns every tensor name the config implies, with its shape.
func (c *Config) TensorShapes() map[string][]int {
	m := map[string][]int{
		EmbedName:     {c.VocabSize, c.HiddenSize},
		FinalNormName: {c.HiddenSize},
	}
	if !c.TieWordEmbeddings {
		m[LMHeadName] = []int{c.VocabSize, c.HiddenSize}
	}
	for l := 0; l < c.NumHiddenLayers; l++ {
		for _, p := range append(slices.Clone(attnProjs), mlpProjs...) {
			s, _ := c.ProjShape(p)
			m[ProjName(l, p)] = s
		}
		m[NormName(l, InputNorm)] = []int{c.HiddenSize}
		m[NormName(l, PostNorm)] = []int{c.HiddenSize}
	}
	return m
}

// Names returns the model's tensor names, sorted.
func (m *Model) Names() []string {
	names := make([]string, 0, len(m.Tensors))
	for n := range m.Tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// NumParams returns the number of weights.
func (m *Model) NumParams() int {
	n := 0
	for _, t := range m.Tensors {
		n += t.Len()
	}
	return n
}

// Widened returns m with every BF16-held tensor (LoadBF16) widened to
// float32; the other tensors are shared with m, not copied. It returns m
// itself when no tensor is BF16-held.
func (m *Model) Widened() *Model {
	out := &Model{Config: m.Config, Tensors: make(map[string]*Tensor, len(m.Tensors))}
	widened := false
	for k, t := range m.Tensors {
		if t.Data == nil && t.BF16 != nil {
			t, widened = &Tensor{Shape: t.Shape, Data: t.Float32s()}, true
		}
		out.Tensors[k] = t
	}
	if !widened {
		return m
	}
	return out
}

// Clone returns a deep copy of m.
func (m *Model) Clone() *Model {
	c := &Model{Config: m.Config, Tensors: make(map[string]*Tensor, len(m.Tensors))}
	for k, t := range m.Tensors {
		c.Tensors[k] = t.Clone()
	}
	return c
}

// Check verifies that the tensors are exactly those the config implies.
// source names the weights (a file) in errors.
func (m *Model) Check(source string) error {
	want := m.Config.TensorShapes()
	for _, name := range slices.Sorted(maps.Keys(want)) {
		t, ok := m.Tensors[name]
		if !ok {
			return fmt.Errorf("%s: tensor %q: missing (config wants shape %v): %w", source, name, want[name], ErrWeights)
		}
		if !slices.Equal(t.Shape, want[name]) {
			return fmt.Errorf("%s: tensor %q: shape %v, but the config (%s) wants %v: %w",
				source, name, t.Shape, m.Config.shapeWhy(name), want[name], ErrWeights)
		}
		if t.Len() != prod(t.Shape) || (t.Data != nil && t.BF16 != nil) {
			return fmt.Errorf("%s: tensor %q: %d values for shape %v: %w", source, name, t.Len(), t.Shape, ErrWeights)
		}
	}
	for _, name := range m.Names() {
		if _, ok := want[name]; !ok {
			return fmt.Errorf("%s: tensor %q: not part of a LlamaForCausalLM with this config: %w", source, name, ErrWeights)
		}
	}
	return nil
}

func (c *Config) shapeWhy(name string) string {
	base := fmt.Sprintf("hidden_size=%d", c.HiddenSize)
	switch {
	case name == EmbedName || name == LMHeadName:
		return fmt.Sprintf("vocab_size=%d, %s", c.VocabSize, base)
	case strings.HasSuffix(name, "q_proj.weight") || strings.HasSuffix(name, "o_proj.weight"):
		return fmt.Sprintf("%s, num_attention_heads=%d, head_dim=%d", base, c.NumAttentionHeads, c.HeadDimension())
	case strings.HasSuffix(name, "k_proj.weight") || strings.HasSuffix(name, "v_proj.weight"):
		return fmt.Sprintf("%s, num_key_value_heads=%d, head_dim=%d", base, c.KVHeads(), c.HeadDimension())
	case strings.Contains(name, ".mlp."):
		return fmt.Sprintf("%s, intermediate_size=%d", base, c.IntermediateSize)
	}
	return base
}

// New returns a model with freshly initialised weights drawn from a seeded
// RNG as transformers' LlamaPreTrainedModel does: normal(0,
// initializer_range) for embeddings and projections, ones for the norms.
// Each tensor has its own stream keyed by (seed, name), so the result does
// not depend on iteration order.
func New(cfg Config, seed uint64) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Model{Config: cfg, Tensors: map[string]*Tensor{}}
	for name, shape := range cfg.TensorShapes() {
		t := &Tensor{Shape: shape, Data: make([]float32, prod(shape))}
		if strings.HasSuffix(name, "norm.weight") {
			for i := range t.Data {
				t.Data[i] = 1
			}
		} else {
			r := tensorRNG(seed, name)
			for i := range t.Data {
				t.Data[i] = float32(r.NormFloat64() * cfg.InitializerRange)
			}
		}
		m.Tensors[name] = t
	}
	return m, nil
}

// tensorRNG returns the deterministic random stream for one tensor.
func tensorRNG(seed uint64, name string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(name))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// MetaUpdateKind is the "__metadata__" key by which an update file says
// what its tensors hold (aggregator.MetaKind): "full" weights, or a "delta"
// to add to a base. Load, LoadAdapter and ReadAdapterFile refuse a file
// that is not full weights.
const MetaUpdateKind = "fedtune.kind"

// ErrNotWeights is wrapped by the error about a file that holds an update
// to add to a base (MetaUpdateKind "delta"), where weights were expected.
var ErrNotWeights = errors.New("an update to be added to its base, not weights")

// notDelta returns an error if f says it holds anything but full weights.
func notDelta(path string, f *safetensors.File) error {
	if k := f.Metadata()[MetaUpdateKind]; k != "" && k != "full" {
		return fmt.Errorf("%s: __metadata__ %s is %q: %w", path, MetaUpdateKind, k, ErrNotWeights)
	}
	return nil
}

// Load reads a Hugging Face model folder: config.json and model.safetensors
// (or the shards listed by model.safetensors.index.json), F32, F16, BF16 or
// F64. The tensors must be exactly those the config implies.
func Load(dir string) (*Model, error) { return load(dir, false) }

// LoadBF16 is Load for frozen weights: the BF16 tensors of a matrix shape
// (projections, embedding, head) stay BF16 (Tensor.BF16, half the memory of
// float32; the engine reads them so without a float32 copy), the rest are
// float32 as Load makes them. What reads Tensor.Data must widen first
// (Model.Widened).
func LoadBF16(dir string) (*Model, error) { return load(dir, true) }

func load(dir string, keepBF16 bool) (*Model, error) {
	cfg, err := LoadConfigJSON(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, err
	}
	m := &Model{Config: cfg, Tensors: map[string]*Tensor{}}
	files, err := weightFiles(dir)
	if err != nil {
		return nil, err
	}
	want := cfg.TensorShapes()
	for _, wf := range files {
		f, err := safetensors.Open(wf.path)
		if err != nil {
			return nil, err
		}
		err = func() error {
			defer f.Close()
			if err := notDelta(wf.path, f); err != nil {
				return err
			}
			for _, ti := range f.Tensors() {
				if wf.names != nil && !wf.names[ti.Name] {
					return fmt.Errorf("%s: tensor %q: not listed for this file in %s: %w", wf.path, ti.Name, WeightsIndex, ErrWeights)
				}
				if strings.HasSuffix(ti.Name, "rotary_emb.inv_freq") {
					continue // a buffer some older checkpoints saved; recomputed here
				}
				if ti.Name == LMHeadName && cfg.TieWordEmbeddings {
					continue // tied: the embedding is the head, as in transformers
				}
				if _, dup := m.Tensors[ti.Name]; dup {
					return fmt.Errorf("%s: tensor %q: appears in more than one shard: %w", wf.path, ti.Name, ErrWeights)
				}
				if !ti.DType.IsFloat() {
					return fmt.Errorf("%s: tensor %q: dtype %s is not a float type: %w", wf.path, ti.Name, ti.DType, ErrWeights)
				}
				if ws, ok := want[ti.Name]; ok && !slices.Equal(ti.Shape, ws) {
					return fmt.Errorf("%s: tensor %q: shape %v, but %s (%s) wants %v: %w",
						wf.path, ti.Name, ti.Shape, ConfigFile, cfg.shapeWhy(ti.Name), ws, ErrWeights)
				}
				if _, ok := want[ti.Name]; !ok {
					return fmt.Errorf("%s: tensor %q: not part of a LlamaForCausalLM with this config: %w", wf.path, ti.Name, ErrWeights)
				}
				if keepBF16 && ti.DType == safetensors.BF16 && len(ti.Shape) == 2 {
					raw, err := f.BF16s(ti.Name)
					if err != nil {
						return err
					}
					m.Tensors[ti.Name] = &Tensor{Shape: slices.Clone(ti.Shape), BF16: raw}
					continue
				}
				data, err := f.Float32s(ti.Name)
				if err != nil {
					return err
				}
				m.Tensors[ti.Name] = &Tensor{Shape: slices.Clone(ti.Shape), Data: data}
			}
			return nil
		}()
		if err != nil {
			return nil, err
		}
	}
	src := filepath.Join(dir, WeightsFile)
	if len(files) > 1 || files[0].names != nil {
		src = filepath.Join(dir, WeightsIndex)
	}
	if err := m.Check(src); err != nil {
		return nil, err
	}
	return m, nil
}

type weightFile struct {
	path  string
	names map[string]bool // from the index, nil for a single file
}

func weightFiles(dir string) ([]weightFile, error) {
	single := filepath.Join(dir, WeightsFile)
	if _, err := os.Stat(single); err == nil {
		return []weightFile{{path: single}}, nil
	}
	idxPath := filepath.Join(dir, WeightsIndex)
	data, err := os.ReadFile(idxPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: no %s or %s: %w", dir, WeightsFile, WeightsIndex, os.ErrNotExist)
		}
		return nil, err
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", idxPath, ErrWeights, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%s: empty weight_map: %w", idxPath, ErrWeights)
	}
	byFile := map[string]map[string]bool{}
	for name, file := range idx.WeightMap {
		if file == "" || filepath.Base(file) != file {
			return nil, fmt.Errorf("%s: tensor %q: shard %q must be a plain file name in the folder: %w", idxPath, name, file, ErrWeights)
		}
		if byFile[file] == nil {
			byFile[file] = map[string]bool{}
		}
		byFile[file][name] = true
	}
	var out []weightFile
	for _, file := range slices.Sorted(maps.Keys(byFile)) {
		out = append(out, weightFile{path: filepath.Join(dir, file), names: byFile[file]})
	}
	return out, nil
}

// Save writes m to dir as config.json and a canonical model.safetensors in
// dtype (F32 unless told otherwise), atomically file by file. It returns the
// weight digest (the SHA-256 of model.safetensors).
func (m *Model) Save(dir string, dtype safetensors.DType) (string, error) {
	if dtype == "" {
		dtype = safetensors.F32
	}
	if err := m.Check("model"); err != nil {
		return "", err
	}
	cfg := m.Config
	cfg.TorchDtype = map[safetensors.DType]string{safetensors.F32: "float32", safetensors.F16: "float16", safetensors.BF16: "bfloat16"}[dtype]
	if cfg.TorchDtype == "" { // checked before the folder is made: a bad dtype leaves nothing behind
		return "", fmt.Errorf("save model: dtype %s not supported (use F32, F16 or BF16)", dtype)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	js, err := cfg.encodeJSON()
	if err != nil {
		return "", err
	}
	ts, err := m.safetensors(dtype)
	if err != nil {
		return "", err
	}
	digest, err := safetensors.WriteFile(filepath.Join(dir, WeightsFile), ts, nil)
	if err != nil {
		return "", err
	}
	if _, err := safetensors.WriteFileFunc(filepath.Join(dir, ConfigFile), func(w io.Writer) error {
		_, err := w.Write(js)
		return err
	}); err != nil {
		return "", err
	}
	return digest, nil
}

func (m *Model) safetensors(dtype safetensors.DType) ([]safetensors.Tensor, error) {
	return tensorsTo(m.Tensors, dtype)
}

func tensorsTo(ts map[string]*Tensor, dtype safetensors.DType) ([]safetensors.Tensor, error) {
	out := make([]safetensors.Tensor, 0, len(ts))
	for _, name := range slices.Sorted(maps.Keys(ts)) {
		t := ts[name]
		st, err := safetensors.FromFloat32(name, dtype, t.Shape, t.Float32s())
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// Digest returns the weight digest of m's tensors stored as F32: the SHA-256
// of the canonical model.safetensors that Save(dir, F32) writes.
func (m *Model) Digest() (string, error) {
	ts, err := m.safetensors(safetensors.F32)
	if err != nil {
		return "", err
	}
	return safetensors.Digest(ts)
}

func prod(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// DigestPath returns the weight digest of a .safetensors file, a model
// folder (model.safetensors, or all shards of model.safetensors.index.json
// taken together) or an adapter folder (adapter_model.safetensors).
func DigestPath(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	var files []string
	if !st.IsDir() {
		files = []string{path}
	} else if p := filepath.Join(path, AdapterWeightsFile); fileExists(p) {
		files = []string{p}
	} else {
		wfs, err := weightFiles(path)
		if err != nil {
			return "", err
		}
		for _, wf := range wfs {
			files = append(files, wf.path)
		}
	}
	if len(files) == 1 {
		f, err := safetensors.Open(files[0])
		if err != nil {
			return "", err
		}
		defer f.Close()
		return f.Digest()
	}
	// Shards: one canonical encoding over the union of their tensors.
	var specs []safetensors.TensorInfo
	owner := map[string]*safetensors.File{}
	for _, p := range files {
		f, err := safetensors.Open(p)
		if err != nil {
			return "", err
		}
		defer f.Close()
		for _, ti := range f.Tensors() {
			if _, dup := owner[ti.Name]; dup {
				return "", fmt.Errorf("%s: tensor %q: appears in more than one shard: %w", p, ti.Name, ErrWeights)
			}
			owner[ti.Name] = f
			specs = append(specs, ti)
		}
	}
	h := sha256.New()
	if err := safetensors.Copy(h, specs, func(name string, off int64, p []byte) error {
		return owner[name].ReadRawAt(name, off, p)
	}); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
