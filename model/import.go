package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/strictjson"
	"github.com/fedtune/fedtune/model/chat"
	"github.com/fedtune/fedtune/model/safetensors"
)

// ImportFile is the record Import writes beside the canonical files: the
// canonical weight digest and the SHA-256 of every source file read.
const ImportFile = "import.json"

// ImportFormat is ImportRecord.Format.
const ImportFormat = "fedtune-import/1"

// ErrImport is wrapped by every error about a folder Import refuses.
var ErrImport = errors.New("model: import refused")

// ImportCopied are the files of a Hugging Face folder Import copies
// unchanged when present (tokenizer and generation settings).
var ImportCopied = []string{
	"added_tokens.json", "generation_config.json", "merges.txt", "special_tokens_map.json",
	"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json",
}

// SourceFile is one file Import read: its path relative to the source
// folder, its size and the hex SHA-256 of its bytes.
type SourceFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// ImportRecord is the content of ImportFile.
type ImportRecord struct {
	Format  string `json:"format"`
	Name    string `json:"name,omitempty"`
	Licence string `json:"licence,omitempty"`
	Source  string `json:"source,omitempty"`
	// Digest is the canonical weight digest: the SHA-256 of the
	// model.safetensors Import wrote.
	Digest string `json:"digest"`
	// DType is the dtype the weights were published (and are kept) in.
	DType safetensors.DType `json:"dtype"`
	// Sources are the files read, sorted by path.
	Sources []SourceFile `json:"sources"`
}

// ImportOptions are the descriptive fields ImportRecord carries.
type ImportOptions struct {
	Name, Licence, Source string
}

// shardName is what a shard named by model.safetensors.index.json may be
// called: a plain file name in the folder.
var shardName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*\.safetensors$`)

// Import reads the Hugging Face model folder src as transformers saves it
// (config.json; model.safetensors, or shards listed by
// model.safetensors.index.json; F32, F16 or BF16; the ImportCopied files)
// and writes fedtune's canonical form to dst: config.json as Save writes it,
// one canonical model.safetensors in the published dtype (tensor bytes
// copied, not converted), the copied files, and ImportFile. It refuses,
// naming the file and tensor, a shard that is missing or named outside the
// folder, an index entry no shard holds, a tensor in a shard the index does
// not list for it or in two shards, a non-float or mixed dtype or one other
// than config.json's torch_dtype, a tensor missing, extra or of another
// shape than the config implies, and a source file whose size or
// modification time changed while it was read. dst must not exist (or be
// an empty folder); it appears whole or not at all.
func Import(src, dst string, opt ImportOptions) (*ImportRecord, error) {
	bad := func(file, format string, args ...any) error {
		return fmt.Errorf("%s: %s: %w", filepath.Join(src, file), fmt.Sprintf(format, args...), ErrImport)
	}
	if ents, err := os.ReadDir(dst); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("import: %s exists and is not empty; give a new folder", dst)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("import: %w", err)
	}
	var sources []SourceFile
	stats := map[string]os.FileInfo{}
	source := func(name string) error {
		p := filepath.Join(src, name)
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			return bad(name, "not a regular file")
		}
		sum, err := digest.File(p)
		if err != nil {
			return err
		}
		sources = append(sources, SourceFile{Path: name, Size: st.Size(), SHA256: sum})
		stats[name] = st
		return nil
	}

	cfg, err := LoadConfigJSON(filepath.Join(src, ConfigFile))
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if err := source(ConfigFile); err != nil {
		return nil, err
	}
	shards, err := importShards(src, bad)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, s := range shards {
			s.f.Close()
		}
	}()
	if len(shards) > 1 || shards[0].listed != nil {
		if err := source(WeightsIndex); err != nil {
			return nil, err
		}
	}
	for _, s := range shards {
		if err := source(s.name); err != nil {
			return nil, err
		}
	}
	specs, from, dtype, err := importTensors(&cfg, shards, bad)
	if err != nil {
		return nil, err
	}
	var copied []string
	for _, name := range ImportCopied {
		if _, err := os.Stat(filepath.Join(src, name)); err == nil {
			if err := source(name); err != nil {
				return nil, err
			}
			copied = append(copied, name)
		}
	}
	sort.Slice(sources, func(i, j int) bool { return sources[i].Path < sources[j].Path })
	// A chat template is code its publisher chose: one that runs away
	// (past chat.DefaultLimits on a short conversation) is refused here,
	// before any node serves or trains with it.
	if slices.Contains(copied, chat.ConfigFileName) {
		if _, err := chat.Load(src); err != nil && !errors.Is(err, chat.ErrNoTemplate) {
			return nil, bad(chat.ConfigFileName, "chat template: %v", err)
		}
	}

	parent := filepath.Dir(filepath.Clean(dst))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(parent, ".import-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp) // nothing is left once tmp is renamed
	sum, err := safetensors.WriteFileFunc(filepath.Join(tmp, WeightsFile), func(w io.Writer) error {
		return safetensors.Copy(w, specs, func(name string, off int64, p []byte) error {
			return from[name].ReadRawAt(name, off, p)
		})
	})
	if err != nil {
		return nil, err
	}
	cfg.TorchDtype = map[safetensors.DType]string{safetensors.F32: "float32", safetensors.F16: "float16", safetensors.BF16: "bfloat16"}[dtype]
	js, err := cfg.encodeJSON()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, ConfigFile), js, 0o644); err != nil {
		return nil, err
	}
	for _, name := range copied {
		if err := copyFile(filepath.Join(src, name), filepath.Join(tmp, name)); err != nil {
			return nil, err
		}
	}
	// A source rewritten while it was read would leave hashes that are
	// not those of the bytes imported.
	for name, st := range stats {
		now, err := os.Stat(filepath.Join(src, name))
		if err != nil || now.Size() != st.Size() || !now.ModTime().Equal(st.ModTime()) {
			return nil, bad(name, "changed while it was imported; import again")
		}
	}
	rec := &ImportRecord{Format: ImportFormat, Name: opt.Name, Licence: opt.Licence, Source: opt.Source,
		Digest: sum, DType: dtype, Sources: sources}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, ImportFile), append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("import: %w", err) // an empty folder, checked above
	}
	if err := os.Rename(tmp, dst); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	return rec, nil
}

type importShard struct {
	name   string
	f      *safetensors.File
	listed map[string]bool // the index's tensors for this shard; nil for a single file
}

// importShards opens model.safetensors, or every shard the index names.
func importShards(src string, bad func(file, format string, args ...any) error) ([]importShard, error) {
	if _, err := os.Stat(filepath.Join(src, WeightsFile)); err == nil {
		f, err := safetensors.Open(filepath.Join(src, WeightsFile))
		if err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
		return []importShard{{name: WeightsFile, f: f}}, nil
	}
	data, err := os.ReadFile(filepath.Join(src, WeightsIndex))
	if errors.Is(err, os.ErrNotExist) {
		return nil, bad("", "no %s or %s", WeightsFile, WeightsIndex)
	} else if err != nil {
		return nil, err
	}
	var idx struct {
		Metadata  map[string]any    `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := strictjson.Unmarshal(data, &idx); err != nil {
		return nil, bad(WeightsIndex, "%v", err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, bad(WeightsIndex, "weight_map is empty")
	}
	byFile := map[string]map[string]bool{}
	for _, tensor := range slices.Sorted(maps.Keys(idx.WeightMap)) {
		file := idx.WeightMap[tensor]
		if !shardName.MatchString(file) {
			return nil, bad(WeightsIndex, "tensor %q: shard %q must be a plain .safetensors file name in the folder (no path, no leading dot)", tensor, file)
		}
		if byFile[file] == nil {
			byFile[file] = map[string]bool{}
		}
		byFile[file][tensor] = true
	}
	var out []importShard
	for _, file := range slices.Sorted(maps.Keys(byFile)) {
		p := filepath.Join(src, file)
		if _, err := os.Stat(p); err != nil {
			for _, s := range out {
				s.f.Close()
			}
			return nil, bad(WeightsIndex, "shard %s (holding %d tensors) is missing: %v", file, len(byFile[file]), err)
		}
		f, err := safetensors.Open(p)
		if err != nil {
			for _, s := range out {
				s.f.Close()
			}
			return nil, fmt.Errorf("import: %w", err)
		}
		out = append(out, importShard{name: file, f: f, listed: byFile[file]})
	}
	return out, nil
}

// importTensors checks the shards' tensors against the index and cfg and
// returns their layout, the file each comes from and their one dtype.
func importTensors(cfg *Config, shards []importShard, bad func(file, format string, args ...any) error) ([]safetensors.TensorInfo, map[string]*safetensors.File, safetensors.DType, error) {
	want := cfg.TensorShapes()
	from := map[string]*safetensors.File{}
	fromName := map[string]string{}
	var specs []safetensors.TensorInfo
	var dtype safetensors.DType
	listedIn := map[string]string{}
	for _, s := range shards {
		for name := range s.listed {
			listedIn[name] = s.name
		}
	}
	for _, s := range shards {
		for name := range s.listed {
			if _, ok := s.f.Info(name); !ok {
				return nil, nil, "", bad(WeightsIndex, "names tensor %q in shard %s, which does not hold it", name, s.name)
			}
		}
		for _, ti := range s.f.Tensors() {
			if s.listed != nil && !s.listed[ti.Name] {
				if other := listedIn[ti.Name]; other != "" {
					return nil, nil, "", bad(s.name, "tensor %q is not listed for this shard in %s, which puts it in %s (a tensor in two shards, or in the wrong one)", ti.Name, WeightsIndex, other)
				}
				return nil, nil, "", bad(s.name, "tensor %q is not listed in %s", ti.Name, WeightsIndex)
			}
			if prev, dup := fromName[ti.Name]; dup {
				return nil, nil, "", bad(s.name, "tensor %q is also in %s", ti.Name, prev)
			}
			fromName[ti.Name] = s.name
			if strings.HasSuffix(ti.Name, "rotary_emb.inv_freq") || (ti.Name == LMHeadName && cfg.TieWordEmbeddings) {
				continue // recomputed, or the tied embedding: as Load
			}
			if !ti.DType.IsFloat() || ti.DType == safetensors.F64 {
				return nil, nil, "", bad(s.name, "tensor %q: dtype %s; import takes F32, F16 or BF16", ti.Name, ti.DType)
			}
			if dtype == "" {
				dtype = ti.DType
			} else if ti.DType != dtype {
				return nil, nil, "", bad(s.name, "tensor %q: dtype %s, but other tensors are %s; a checkpoint is imported in one dtype", ti.Name, ti.DType, dtype)
			}
			ws, ok := want[ti.Name]
			if !ok {
				return nil, nil, "", bad(s.name, "tensor %q is not part of a LlamaForCausalLM with this config", ti.Name)
			}
			if !slices.Equal(ti.Shape, ws) {
				return nil, nil, "", bad(s.name, "tensor %q: shape %v, but %s (%s) wants %v", ti.Name, ti.Shape, ConfigFile, cfg.shapeWhy(ti.Name), ws)
			}
			from[ti.Name] = s.f
			specs = append(specs, ti)
		}
	}
	var missing []string
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if from[name] == nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		more := ""
		if len(missing) > 3 {
			more = fmt.Sprintf(" and %d more", len(missing)-3)
			missing = missing[:3]
		}
		return nil, nil, "", bad("", "tensors %s%s are missing", strings.Join(missing, ", "), more)
	}
	if td := map[string]safetensors.DType{"float32": safetensors.F32, "float16": safetensors.F16, "bfloat16": safetensors.BF16}[cfg.TorchDtype]; td != "" && td != dtype {
		return nil, nil, "", bad(ConfigFile, "torch_dtype is %q, but the tensors are %s", cfg.TorchDtype, dtype)
	}
	return specs, from, dtype, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ReadImportRecord reads dir's ImportFile. It wraps os.ErrNotExist when
// dir was not written by Import.
func ReadImportRecord(dir string) (*ImportRecord, error) {
	p := filepath.Join(dir, ImportFile)
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var rec ImportRecord
	if err := strictjson.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if rec.Format != ImportFormat {
		return nil, fmt.Errorf("%s: format %q, want %q", p, rec.Format, ImportFormat)
	}
	if err := digest.Check("digest", rec.Digest); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	for i, s := range rec.Sources {
		if s.Size < 0 {
			return nil, fmt.Errorf("%s: sources[%d].size is negative", p, i)
		}
		if err := digest.Check(fmt.Sprintf("sources[%d].sha256", i), s.SHA256); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	return &rec, nil
}
