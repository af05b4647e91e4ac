package cli

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

func init() { register(newArtifactCmd) }

func newArtifactCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "artifact",
		Short: "Serve, upload, download and verify content-addressed blobs",
	}
	cmd.AddCommand(newArtifactServeCmd(), newArtifactPutCmd(), newArtifactGetCmd(), newArtifactVerifyCmd())
	return cmd
}

func newArtifactServeCmd() *cobra.Command {
	var (
		dir, addr, keyPath string
		allow              []string
		allowAny, insecure bool
		limits             artifact.ServerConfig
	)
	cmd := &cobra.Command{
		Use:   "serve --dir DIR --addr ADDR --key KEY (--allow ID... | --allow-any) [--insecure]",
		Short: "Serve a blob store over gRPC (TLS with the node's ledger key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := logger(cmd)
			var opt grpc.ServerOption
			id := "none (plain text)"
			if insecure {
				log.Warn("serving plain text: no encryption, no peer authentication (--insecure)")
				opt = tlsid.InsecureServerOption()
			} else {
				key, err := loadNodeKey(keyPath)
				if err != nil {
					return err
				}
				var v tlsid.Verifier
				switch {
				case allowAny && len(allow) > 0:
					return errors.New("artifact serve: give --allow or --allow-any, not both")
				case allowAny:
					v = tlsid.AllowAny()
				case len(allow) > 0:
					for _, a := range allow {
						if _, err := artifact.ParseDigest(a); err != nil {
							return fmt.Errorf("artifact serve: --allow %q is not a key ID (64 lowercase hex characters)", a)
						}
					}
					v = tlsid.AllowIDs(allow...)
				default:
					return errors.New("artifact serve: say who may connect: --allow ID (repeatable) or --allow-any")
				}
				allowed := v
				v = func(id string) error {
					err := allowed(id)
					if err != nil {
						log.Warn("refused TLS peer", "peer", id, "reason", err)
					}
					return err
				}
				if opt, err = tlsid.ServerOption(key, v); err != nil {
					return err
				}
				id = ledger.KeyID(key.Public().(ed25519.PublicKey))
			}
			store, err := artifact.OpenStore(dir)
			if err != nil {
				return err
			}
			defer store.Close()
			limits.Store, limits.Logger = store, log
			srv, err := artifact.NewServer(limits)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("artifact serve: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "artifact server listening on %s id %s\n", ln.Addr(), id)
			return srv.Serve(ctx, ln, opt)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "blob store directory (created if missing)")
	f.StringVar(&addr, "addr", "127.0.0.1:7400", "address to listen on")
	f.StringVar(&keyPath, "key", "", "this node's ed25519 key (PKCS#8 PEM); its ID names the server")
	f.StringSliceVar(&allow, "allow", nil, "key ID of a client allowed to connect (repeatable)")
	f.BoolVar(&allowAny, "allow-any", false, "let any client with an ed25519 key connect (still TLS)")
	f.BoolVar(&insecure, "insecure", false, "serve plain text, without TLS or peer authentication")
	f.Int64Var(&limits.MaxBlobSize, "max-blob-size", 4<<30, "refuse uploads announcing more bytes (0: no limit)")
	f.Int64Var(&limits.MemberQuota, "member-quota", 0, "bytes one client key may hold, stored and partial (0: no limit)")
	f.Int64Var(&limits.MemberInFlight, "member-in-flight", 0, "bytes one client key's uploads under way may announce (0: no limit)")
	f.DurationVar(&limits.IdleTimeout, "idle-timeout", artifact.DefaultIdleTimeout, "close a stream on which nothing moves for this long")
	f.DurationVar(&limits.PruneAfter, "prune-after", artifact.DefaultPruneAfter, "remove partial uploads not written to for this long")
	cmd.MarkFlagRequired("dir")
	return cmd
}

// artifactClientFlags are the connection flags of put and get.
type artifactClientFlags struct {
	addr, keyPath, serverID string
	insecure                bool
}

func (a *artifactClientFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&a.addr, "addr", "127.0.0.1:7400", "artifact server address")
	f.StringVar(&a.keyPath, "key", "", "this node's ed25519 key (PKCS#8 PEM), presented to the server")
	f.StringVar(&a.serverID, "server-id", "", "the server's key ID, checked in the TLS handshake")
	f.BoolVar(&a.insecure, "insecure", false, "connect in plain text, without TLS")
}

func (a *artifactClientFlags) dial() (*artifact.Client, error) {
	if a.insecure {
		return artifact.Dial(a.addr, tlsid.InsecureDialOption())
	}
	if a.serverID == "" {
		return nil, errors.New("--server-id is required (the server's key ID), or --insecure for plain text")
	}
	if _, err := artifact.ParseDigest(a.serverID); err != nil {
		return nil, fmt.Errorf("--server-id %q is not a key ID (64 lowercase hex characters)", a.serverID)
	}
	key, err := loadNodeKey(a.keyPath)
	if err != nil {
		return nil, err
	}
	opt, err := tlsid.DialOption(key, tlsid.ExpectID(a.serverID))
	if err != nil {
		return nil, err
	}
	return artifact.Dial(a.addr, opt)
}

func loadNodeKey(path string) (ed25519.PrivateKey, error) {
	if path == "" {
		return nil, errors.New("--key is required for TLS (or --insecure for plain text)")
	}
	return ledger.LoadKey(path)
}

func newArtifactPutCmd() *cobra.Command {
	var cf artifactClientFlags
	cmd := &cobra.Command{
		Use:   "put FILE --addr ADDR (--key KEY --server-id ID | --insecure)",
		Short: "Upload a file to an artifact server and print its digest",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.dial()
			if err != nil {
				return fmt.Errorf("artifact put: %w", err)
			}
			defer c.Close()
			p := newXferProgress(cmd.ErrOrStderr(), "put "+filepath.Base(args[0]))
			c.Progress = p.update
			d, res, err := c.UploadFile(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("artifact put %s: %w", args[0], err)
			}
			switch {
			case res.Existed:
				p.finish("already on the server")
			case res.ResumedFrom > 0:
				p.finish(fmt.Sprintf("resumed from byte %d", res.ResumedFrom))
			default:
				p.finish("")
			}
			fmt.Fprintln(cmd.OutOrStdout(), d)
			return nil
		},
	}
	cf.add(cmd)
	return cmd
}

func newArtifactGetCmd() *cobra.Command {
	var (
		cf  artifactClientFlags
		out string
	)
	cmd := &cobra.Command{
		Use:   "get DIGEST -o FILE --addr ADDR (--key KEY --server-id ID | --insecure)",
		Short: "Download a blob, verify its digest and write it to FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := artifact.ParseDigest(args[0])
			if err != nil {
				return fmt.Errorf("artifact get: %w", err)
			}
			if out == "" {
				return errors.New("artifact get: -o FILE is required")
			}
			c, err := cf.dial()
			if err != nil {
				return fmt.Errorf("artifact get: %w", err)
			}
			defer c.Close()
			p := newXferProgress(cmd.ErrOrStderr(), "get "+d[:12])
			c.Progress = p.update
			if err := downloadToFile(cmd.Context(), c, d, out); err != nil {
				return fmt.Errorf("artifact get %s: %w", d, err)
			}
			p.finish("digest verified")
			return nil
		},
	}
	cf.add(cmd)
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write (replaced only once the digest checks)")
	return cmd
}

// downloadToFile downloads d into a temporary file beside path and renames
// it into place only if the digest checks.
func downloadToFile(ctx context.Context, c *artifact.Client, d, path string) error {
	return atomicfile.WriteFunc(path, 0o600, func(f *os.File) error {
		_, err := c.Download(ctx, d, f)
		return err
	})
}

func newArtifactVerifyCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "verify --dir DIR",
		Short: "Re-hash every blob in a store and report any that no longer match their digest",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return fmt.Errorf("artifact verify: --dir %s is not a folder", dir)
			}
			store, err := artifact.OpenStore(dir)
			if errors.Is(err, artifact.ErrLocked) {
				return fmt.Errorf("artifact verify: %w: its server (a coordinator, or artifact serve) holds it; stop it first, or check the blobs the chain names with fedtune audit verify --artifacts %s, which reads without the lock", err, dir)
			}
			if err != nil {
				return fmt.Errorf("artifact verify: %w", err)
			}
			defer store.Close()
			blobs, err := store.List()
			if err != nil {
				return fmt.Errorf("artifact verify: %w", err)
			}
			out := cmd.OutOrStdout()
			bad := 0
			for _, b := range blobs {
				if err := store.Verify(cmd.Context(), b.Digest); err != nil {
					bad++
					fmt.Fprintf(out, "CORRUPT %s %d %v\n", b.Digest, b.Size, err)
					continue
				}
				fmt.Fprintf(out, "ok      %s %d\n", b.Digest, b.Size)
			}
			if bad > 0 {
				return fmt.Errorf("artifact verify: %d of %d blobs in %s are corrupt", bad, len(blobs), dir)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%d blobs verified\n", len(blobs))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "blob store directory")
	cmd.MarkFlagRequired("dir")
	return cmd
}

// xferProgress writes a transfer's progress line to w at most twice a second,
// and a final summary line.
type xferProgress struct {
	w     io.Writer
	label string
	start time.Time

	mu          sync.Mutex
	last        time.Time
	done, total int64
	shown       bool
}

func newXferProgress(w io.Writer, label string) *xferProgress {
	return &xferProgress{w: w, label: label, start: time.Now()}
}

func (p *xferProgress) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.total = done, total
	now := time.Now()
	if now.Sub(p.last) < 500*time.Millisecond || now.Sub(p.start) < 500*time.Millisecond {
		return
	}
	p.last = now
	p.shown = true
	fmt.Fprintf(p.w, "\r%s: %s", p.label, p.line(now))
}

func (p *xferProgress) line(now time.Time) string {
	el := now.Sub(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(p.done) / 1e6 / el
	}
	if p.total > 0 {
		return fmt.Sprintf("%.1f / %.1f MiB (%3.0f%%) %.1f MB/s", float64(p.done)/(1<<20), float64(p.total)/(1<<20), 100*float64(p.done)/float64(p.total), rate)
	}
	return fmt.Sprintf("%.1f MiB %.1f MB/s", float64(p.done)/(1<<20), rate)
}

func (p *xferProgress) finish(note string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if note != "" {
		note = ", " + note
	}
	prefix := ""
	if p.shown {
		prefix = "\r"
	}
	fmt.Fprintf(p.w, "%s%s: %s in %s%s\n", prefix, p.label, p.line(time.Now()), time.Since(p.start).Round(time.Millisecond), note)
}
