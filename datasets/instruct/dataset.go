package instruct

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/fedtune/fedtune/datasets"
)

// ReadDataset reads the instruction file at path as a datasets.Dataset
// whose samples are its records verbatim: Text is the record's JSON line
// (without its line break), ID "<file name>:<line>" as Read gives. It is
// what datasets.BuildManifest hashes (one leaf per record) and what
// datasets.Split divides; Records turns the samples back into records.
// Every record is checked as Read checks it.
func ReadDataset(path string) (*datasets.Dataset, Format, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("instruct: %w", err)
	}
	name := filepath.Base(path)
	d := &datasets.Dataset{Name: name}
	var fd formatDetector
	err = eachLine(data, name, func(n int, line []byte) error {
		if _, err := fd.decode(line, fmt.Sprintf("line %d", n)); err != nil {
			return lineError(name, n, "%v", err)
		}
		d.Samples = append(d.Samples, datasets.Sample{ID: fmt.Sprintf("%s:%d", name, n), Text: string(line)})
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return d, fd.format, nil
}

// Records decodes the samples of d, each the JSON text of one record (as
// ReadDataset makes them), keeping their IDs. All must have one format.
func Records(d *datasets.Dataset) ([]Record, Format, error) {
	if len(d.Samples) == 0 {
		return nil, "", fmt.Errorf("instruct: %s: no records: %w", d.Name, ErrFormat)
	}
	recs := make([]Record, 0, len(d.Samples))
	var fd formatDetector
	for _, s := range d.Samples {
		msgs, err := fd.decode([]byte(s.Text), s.ID)
		if err != nil {
			return nil, "", fmt.Errorf("instruct: %s: %v: %w", s.ID, err, ErrFormat)
		}
		recs = append(recs, Record{ID: s.ID, Messages: msgs})
	}
	return recs, fd.format, nil
}
