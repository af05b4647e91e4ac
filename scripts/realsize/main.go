// Command realsize writes a Hugging Face model folder with the real
// configuration of a published model and random weights, laid out the way
// transformers' save_pretrained publishes it: config.json with
// transformers' bookkeeping keys, BF16 safetensors with "__metadata__"
// {"format":"pt"} (data in reverse name order, not canonical), sharded as
// model-0000i-of-0000n.safetensors with model.safetensors.index.json when
// asked, generation_config.json and tokenizer_config.json. No tokenizer.json
// is written: fedtune then uses its byte tokenizer.
//
// The weights are drawn from a seeded generator per tensor (the same seed
// gives the same bytes, however the tensors are sharded) and streamed to
// disk, so a 1B-parameter model needs no more memory than a buffer.
//
// Usage:
//
//	go run ./scripts/realsize -model smollm2-135m -o DIR [-seed N] [-shards N]
//	go run ./scripts/realsize -list
//
// scripts/realsize.sh (make realsize) imports, trains, evaluates and
// generates with what it writes and measures each step.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
)

// preset is one published model's configuration and layout.
type preset struct {
	cfg    model.Config
	shards int // as published (or as the brief allows)
	bos    int
	eos    int
}

func intp(v int) *int { return &v }

// presets are the real configs (config.json on the Hugging Face Hub) of
// HuggingFaceTB/SmolLM2-135M and meta-llama/Llama-3.2-1B.
var presets = map[string]preset{
	"smollm2-135m": {
		cfg: model.Config{
			Architectures: []string{"LlamaForCausalLM"}, ModelType: "llama",
			VocabSize: 49152, HiddenSize: 576, IntermediateSize: 1536, NumHiddenLayers: 30,
			NumAttentionHeads: 9, NumKeyValueHeads: 3, HeadDim: 64, MaxPositionEmbeddings: 8192,
			RMSNormEps: 1e-5, RopeTheta: 100000, TieWordEmbeddings: true, HiddenAct: "silu",
			InitializerRange: 0.041666666666666664, BOSTokenID: intp(0), EOSTokenID: model.TokenIDs{0},
		},
		shards: 1, bos: 0, eos: 0,
	},
	"llama3.2-1b": {
		cfg: model.Config{
			Architectures: []string{"LlamaForCausalLM"}, ModelType: "llama",
			VocabSize: 128256, HiddenSize: 2048, IntermediateSize: 8192, NumHiddenLayers: 16,
			NumAttentionHeads: 32, NumKeyValueHeads: 8, HeadDim: 64, MaxPositionEmbeddings: 131072,
			RMSNormEps: 1e-5, RopeTheta: 500000, TieWordEmbeddings: true, HiddenAct: "silu",
			InitializerRange: 0.02, BOSTokenID: intp(128000), EOSTokenID: model.TokenIDs{128001},
			RopeScaling: &model.RopeScaling{RopeType: "llama3", Factor: 32, LowFreqFactor: 1,
				HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192},
		},
		shards: 2, bos: 128000, eos: 128001,
	},
}

func main() {
	name := flag.String("model", "", "preset: smollm2-135m or llama3.2-1b")
	out := flag.String("o", "", "output folder (created)")
	seed := flag.Uint64("seed", 1, "weight seed")
	shards := flag.Int("shards", 0, "safetensors files (0: as the preset is published)")
	list := flag.Bool("list", false, "print the presets and their sizes")
	flag.Parse()
	if *list {
		names := make([]string, 0, len(presets))
		for n := range presets {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			p := presets[n]
			fmt.Printf("%-14s %d params, %d BF16 bytes, %d shard(s)\n", n, numParams(&p.cfg), 2*numParams(&p.cfg), p.shards)
		}
		return
	}
	p, ok := presets[*name]
	if !ok || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: realsize -model smollm2-135m|llama3.2-1b -o DIR [-seed N] [-shards N]")
		os.Exit(2)
	}
	if *shards > 0 {
		p.shards = *shards
	}
	if err := write(*out, p, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "realsize:", err)
		os.Exit(1)
	}
}

func numParams(c *model.Config) int64 {
	var n int64
	for _, s := range c.TensorShapes() {
		n += int64(prod(s))
	}
	return n
}

func prod(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// write lays p out in dir.
func write(dir string, p preset, seed uint64) error {
	cfg := p.cfg
	cfg.TorchDtype = "bfloat16"
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cj, err := json.Marshal(&cfg)
	if err != nil {
		return err
	}
	var cm map[string]any
	if err := json.Unmarshal(cj, &cm); err != nil {
		return err
	}
	cm["transformers_version"], cm["use_cache"], cm["pretraining_tp"] = "4.46.3", true, 1
	cj, _ = json.MarshalIndent(cm, "", "  ")
	files := map[string]string{
		model.ConfigFile: string(cj) + "\n",
		"generation_config.json": fmt.Sprintf("{\n  \"_from_model_config\": true,\n  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n  \"transformers_version\": \"4.46.3\"\n}\n",
			p.bos, p.eos),
		"tokenizer_config.json": "{\n  \"model_max_length\": " + fmt.Sprint(cfg.MaxPositionEmbeddings) + "\n}\n",
	}
	for n, s := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(s), 0o644); err != nil {
			return err
		}
	}

	shapes := cfg.TensorShapes()
	names := make([]string, 0, len(shapes))
	for n := range shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	per := (len(names) + p.shards - 1) / p.shards
	weightMap := map[string]string{}
	var total int64
	for i := 0; i < p.shards; i++ {
		part := names[min(i*per, len(names)):min((i+1)*per, len(names))]
		file := model.WeightsFile
		if p.shards > 1 {
			file = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, p.shards)
		}
		n, err := writeShard(filepath.Join(dir, file), part, shapes, cfg.InitializerRange, seed)
		if err != nil {
			return err
		}
		for _, t := range part {
			weightMap[t] = file
		}
		total += n
	}
	if p.shards > 1 {
		idx, _ := json.MarshalIndent(map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}, "", "  ")
		if err := os.WriteFile(filepath.Join(dir, model.WeightsIndex), append(idx, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeShard streams names' random BF16 tensors to path as the Python
// safetensors library might lay them out (see modeltest.HFSafetensors):
// data in reverse name order, "__metadata__" last in the header, the
// header padded to 8 bytes. It returns the data bytes written.
func writeShard(path string, names []string, shapes map[string][]int, std float64, seed uint64) (int64, error) {
	order := append([]string(nil), names...)
	sort.Sort(sort.Reverse(sort.StringSlice(order)))
	var hdr strings.Builder
	var off int64
	hdr.WriteByte('{')
	for _, n := range order {
		shape, _ := json.Marshal(shapes[n])
		size := int64(prod(shapes[n])) * 2
		fmt.Fprintf(&hdr, `%q:{"dtype":"%s","shape":%s,"data_offsets":[%d,%d]},`, n, safetensors.BF16, shape, off, off+size)
		off += size
	}
	hdr.WriteString(`"__metadata__":{"format":"pt"}}`)
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	_ = binary.Write(w, binary.LittleEndian, uint64(hdr.Len()))
	w.WriteString(hdr.String())
	buf := make([]byte, 1<<16)
	for _, n := range order {
		h := fnv.New64a()
		h.Write([]byte(n))
		rng := rand.New(rand.NewPCG(seed, h.Sum64()))
		norm := strings.HasSuffix(n, "norm.weight")
		// Uniform on [-a, a] with standard deviation std; norms near 1.
		a := float32(std * math.Sqrt(3))
		for left := prod(shapes[n]); left > 0; {
			k := min(left, len(buf)/2)
			for j := 0; j < k; j += 4 {
				r := rng.Uint64()
				for q := 0; q < 4 && j+q < k; q++ {
					u := float32(uint16(r>>(16*q)))/65536*2 - 1
					v := u * a
					if norm {
						v = 1 + u*0.05
					}
					binary.LittleEndian.PutUint16(buf[2*(j+q):], uint16(math.Float32bits(v)>>16))
				}
			}
			if _, err := w.Write(buf[:2*k]); err != nil {
				f.Close()
				return 0, err
			}
			left -= k
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return 0, err
	}
	return off, f.Close()
}
