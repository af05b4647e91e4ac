package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

func artifactKey(t *testing.T, dir, name string) (path, id string) {
	t.Helper()
	k, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, name+".pem")
	if err := ledger.SaveKey(path, k); err != nil {
		t.Fatal(err)
	}
	return path, ledger.KeyID(k.Public().(ed25519.PublicKey))
}

// startArtifactServe runs "artifact serve" with args until the test ends
// and returns the address it listens on.
func startArtifactServe(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	// done is closed when serve returns, and serveErr is its result: both
	// the startup loop and the cleanup can observe the exit.
	done := make(chan struct{})
	var serveErr error
	go func() {
		defer close(done)
		serveErr = RunWith(ctx, append([]string{"artifact", "serve", "--addr", "127.0.0.1:0"}, args...), &out, &errb)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
			if serveErr != nil {
				t.Errorf("serve: %v", serveErr)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop within 30s of its context being cancelled")
		}
	})
	re := regexp.MustCompile(`listening on (\S+)`)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		select {
		case <-done:
			t.Fatalf("serve exited: %v\n%s", serveErr, errb.String())
		default:
		}
	}
	t.Fatalf("serve did not start:\n%s", errb.String())
	return ""
}

func TestArtifactCommands(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	srvKey, srvID := artifactKey(t, tmp, "server")
	cliKey, cliID := artifactKey(t, tmp, "client")
	store := filepath.Join(tmp, "store")
	addr := startArtifactServe(t, "--dir", store, "--key", srvKey, "--allow", cliID)

	data := bytes.Repeat([]byte("fedtune weights "), 200000) // 3.2 MB
	in := filepath.Join(tmp, "model.safetensors")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	conn := []string{"--addr", addr, "--key", cliKey, "--server-id", srvID}
	var out, errb syncBuffer
	if err := RunWith(ctx, append([]string{"artifact", "put", in}, conn...), &out, &errb); err != nil {
		t.Fatalf("put: %v\n%s", err, errb.String())
	}
	d := strings.TrimSpace(out.String())
	if d != artifact.DigestOf(data) {
		t.Fatalf("put printed %q, want the file's SHA-256 %s", d, artifact.DigestOf(data))
	}
	if !strings.Contains(errb.String(), "MB/s") {
		t.Errorf("no progress line on stderr: %q", errb.String())
	}

	got := filepath.Join(tmp, "got.safetensors")
	if err := RunWith(ctx, append([]string{"artifact", "get", d, "-o", got}, conn...), &syncBuffer{}, &errb); err != nil {
		t.Fatalf("get: %v\n%s", err, errb.String())
	}
	if b, _ := os.ReadFile(got); !bytes.Equal(b, data) {
		t.Fatal("get wrote different bytes")
	}

	// Errors that say what is wrong.
	errCases := []struct {
		name string
		args []string
		want string
	}{
		{"bad digest", append([]string{"artifact", "get", "xyz", "-o", got}, conn...), "64 lowercase hex"},
		{"absent blob", append([]string{"artifact", "get", artifact.DigestOf(nil), "-o", filepath.Join(tmp, "none")}, conn...), "not found"},
		{"wrong server id", []string{"artifact", "put", in, "--addr", addr, "--key", cliKey, "--server-id", cliID}, "expected " + cliID},
		{"client not allowed", []string{"artifact", "put", in, "--addr", addr, "--key", srvKey, "--server-id", srvID}, "unavailable"},
		{"plain text to TLS", []string{"artifact", "put", in, "--addr", addr, "--insecure"}, "unavailable"},
		{"no server id", []string{"artifact", "put", in, "--addr", addr, "--key", cliKey}, "--server-id is required"},
		{"serve without allow", []string{"artifact", "serve", "--dir", store, "--key", srvKey}, "--allow"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			err := RunWith(ctx, tc.args, &syncBuffer{}, &syncBuffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(tmp, "none")); !os.IsNotExist(err) {
		t.Error("a failed get left its output file")
	}
}

func TestArtifactInsecureAndVerify(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	store := filepath.Join(tmp, "store")
	addr := startArtifactServe(t, "--dir", store, "--insecure")
	in := filepath.Join(tmp, "blob")
	os.WriteFile(in, []byte("a small update"), 0o644)
	var out syncBuffer
	if err := RunWith(ctx, []string{"artifact", "put", in, "--addr", addr, "--insecure"}, &out, &syncBuffer{}); err != nil {
		t.Fatal(err)
	}
	d := strings.TrimSpace(out.String())

	// verify works on a store no server holds.
	s, err := artifact.OpenStore(filepath.Join(tmp, "offline"))
	if err != nil {
		t.Fatal(err)
	}
	d2, _, _ := s.Put(ctx, strings.NewReader("a small update"))
	s.Close()
	if d2 != d {
		t.Fatalf("digests differ: %s vs %s", d2, d)
	}
	out = syncBuffer{}
	if err := RunWith(ctx, []string{"artifact", "verify", "--dir", filepath.Join(tmp, "offline")}, &out, &syncBuffer{}); err != nil || !strings.Contains(out.String(), "ok      "+d) {
		t.Fatalf("verify: %v\n%s", err, out.String())
	}
	p := filepath.Join(tmp, "offline", "blobs", d[:2], d)
	os.Chmod(p, 0o644)
	os.WriteFile(p, []byte("a small updatE"), 0o644)
	out = syncBuffer{}
	err = RunWith(ctx, []string{"artifact", "verify", "--dir", filepath.Join(tmp, "offline")}, &out, &syncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "1 of 1 blobs") || !strings.Contains(out.String(), "CORRUPT "+d) {
		t.Fatalf("verify of a corrupted store: %v\n%s", err, out.String())
	}
	// The served store is locked by the server.
	if err := RunWith(ctx, []string{"artifact", "verify", "--dir", store}, &syncBuffer{}, &syncBuffer{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("verify of a served store: %v", err)
	}
}

func TestTLSCert(t *testing.T) {
	tmp := t.TempDir()
	key, id := artifactKey(t, tmp, "node")
	out := filepath.Join(tmp, "cert.pem")
	if err := RunWith(context.Background(), []string{"tls", "cert", "--key", key, "-o", out}, &syncBuffer{}, &syncBuffer{}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("no PEM in %s", out)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tlsid.IDFromCert(c); err != nil || got != id || c.Subject.CommonName != id {
		t.Fatalf("cert names %q (CN %q), %v; want %s", got, c.Subject.CommonName, err, id)
	}
}
