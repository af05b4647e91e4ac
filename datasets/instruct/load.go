package instruct

import "fmt"

// Load reads the instruction file at path and encodes every record.
func Load(path string, r Renderer, enc Encoder) ([]Example, Format, error) {
	recs, f, err := Read(path)
	if err != nil {
		return nil, "", err
	}
	exs, err := EncodeAll(recs, r, enc)
	if err != nil {
		return nil, "", fmt.Errorf("instruct: %s: %w", path, err)
	}
	return exs, f, nil
}
