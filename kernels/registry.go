package kernels

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// ErrUnknownBackend is wrapped by Open's error for a backend name that is
// not registered.
var ErrUnknownBackend = errors.New("kernels: unknown backend")

var registry = struct {
	sync.Mutex
	open map[string]func() (Backend, error)
}{open: map[string]func() (Backend, error){
	"cpu":       func() (Backend, error) { return Default(), nil },
	"reference": func() (Backend, error) { return Reference{}, nil },
}}

// buildTags names the build tag that adds a backend this binary may lack.
var buildTags = map[string]string{"cuda": "fedcuda"}

// Register makes a backend available to Open under name. Packages that
// provide a backend call it from init (kernels/cuda registers "cuda" when
// built with the build tag fedcuda). Registering a name twice, an empty name or
// a nil open function panics: each is a programming error.
func Register(name string, open func() (Backend, error)) {
	if name == "" || open == nil {
		panic("kernels: Register: empty name or nil open function")
	}
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.open[name]; dup {
		panic(fmt.Sprintf("kernels: Register: backend %q registered twice", name))
	}
	registry.open[name] = open
}

// Open returns the backend registered under name: "cpu" (Default, also
// chosen by ""), "reference", and whatever the binary's build added, such
// as "cuda". For a name this binary lacks the error says which build tag
// adds it, or lists the names it has.
func Open(name string) (Backend, error) {
	if name == "" {
		name = "cpu"
	}
	registry.Lock()
	open, ok := registry.open[name]
	registry.Unlock()
	if !ok {
		if tag, known := buildTags[name]; known {
			return nil, fmt.Errorf("%w %q: this binary was built without it (rebuild with -tags %s)", ErrUnknownBackend, name, tag)
		}
		return nil, fmt.Errorf("%w %q (have %s)", ErrUnknownBackend, name, strings.Join(Backends(), ", "))
	}
	be, err := open()
	if err != nil {
		return nil, fmt.Errorf("kernels: opening backend %q: %w", name, err)
	}
	return be, nil
}

// Backends lists the registered backend names, sorted.
func Backends() []string {
	registry.Lock()
	defer registry.Unlock()
	names := make([]string, 0, len(registry.open))
	for n := range registry.open {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
