package kernels

import (
	"errors"
	"strings"
	"testing"
)

func TestRegistryBuiltins(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"", "cpu"},
		{"cpu", "cpu"},
		{"reference", "reference"},
	} {
		be, err := Open(tc.name)
		if err != nil {
			t.Fatalf("Open(%q): %v", tc.name, err)
		}
		if be.Name() != tc.want {
			t.Errorf("Open(%q).Name() = %q, want %q", tc.name, be.Name(), tc.want)
		}
	}
	if be, _ := Open("cpu"); be != Default() {
		t.Errorf("Open(cpu) is not Default()")
	}
}

func TestRegistryUnknown(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"tpu", "have "},
		{"CPU", "have cpu"},
	} {
		_, err := Open(tc.name)
		if !errors.Is(err, ErrUnknownBackend) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want ErrUnknownBackend mentioning %q", tc.name, err, tc.want)
		}
	}
	if isRegistered("cuda") {
		t.Skip("this binary has the cuda backend")
	}
	_, err := Open("cuda")
	if !errors.Is(err, ErrUnknownBackend) || !strings.Contains(err.Error(), "-tags fedcuda") {
		t.Errorf("Open(cuda) = %v, want an error naming the build tag", err)
	}
}

func isRegistered(name string) bool {
	for _, n := range Backends() {
		if n == name {
			return true
		}
	}
	return false
}

func TestRegister(t *testing.T) {
	opened := 0
	Register("test-registry", func() (Backend, error) { opened++; return Reference{}, nil })
	t.Cleanup(func() {
		registry.Lock()
		delete(registry.open, "test-registry")
		registry.Unlock()
	})
	be, err := Open("test-registry")
	if err != nil || be.Name() != "reference" || opened != 1 {
		t.Fatalf("Open(test-registry) = %v, %v after %d opens", be, err, opened)
	}
	if !isRegistered("test-registry") {
		t.Errorf("Backends() = %v lacks test-registry", Backends())
	}
	failing := errors.New("no device")
	Register("test-registry-fail", func() (Backend, error) { return nil, failing })
	t.Cleanup(func() {
		registry.Lock()
		delete(registry.open, "test-registry-fail")
		registry.Unlock()
	})
	if _, err := Open("test-registry-fail"); !errors.Is(err, failing) || !strings.Contains(err.Error(), `"test-registry-fail"`) {
		t.Errorf("Open(test-registry-fail) = %v, want the open error wrapped with the name", err)
	}
	for _, bad := range []func(){
		func() { Register("cpu", func() (Backend, error) { return Reference{}, nil }) },
		func() { Register("", func() (Backend, error) { return Reference{}, nil }) },
		func() { Register("x", nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("Register did not panic")
				}
			}()
			bad()
		}()
	}
}
