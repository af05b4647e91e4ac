package inference

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/model"
)

// AdapterFolder makes dir an adapter folder (as LoadModel's adapterDir) of
// the global LoRA adapter file global, as a job commits it: its adapter
// config from lc, and the file itself, unchanged, as its weights, so that
// the folder's digest is the committed one.
func AdapterFolder(global, dir string, lc model.LoRAConfig) error {
	ad, err := model.ReadAdapterFile(global, lc)
	if err != nil {
		return err
	}
	if _, err := ad.Save(dir); err != nil {
		return err
	}
	data, err := os.ReadFile(global)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, model.AdapterWeightsFile), data, 0o644)
}

// ModelFolder makes dir a model folder (as LoadModel's dir) of the full
// weights file weights, as a full fine-tuning job commits it, on the
// other files of the base model folder base (config.json, tokenizer, chat
// template): each a hard link where the file system allows, else a copy
// written atomically; weights becomes its model.WeightsFile, unchanged, so
// that the folder's digest is the committed one. Weight files of base
// (*.safetensors, a shard index) are left out.
func ModelFolder(base, weights, dir string) error {
	ents, err := os.ReadDir(base)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || strings.HasSuffix(n, ".safetensors") || strings.HasSuffix(n, ".safetensors.index.json") {
			continue
		}
		if err := linkOrCopy(filepath.Join(base, n), filepath.Join(dir, n)); err != nil {
			return err
		}
	}
	return linkOrCopy(weights, filepath.Join(dir, model.WeightsFile))
}

// linkOrCopy makes dst a hard link to src, or an atomically written copy
// where links fail.
func linkOrCopy(src, dst string) error {
	if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if os.Link(src, dst) == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return atomicfile.WriteFunc(dst, 0o644, func(f *os.File) error {
		_, err := io.Copy(f, in)
		return err
	})
}
