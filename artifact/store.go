package artifact

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Errors returned by the Store (wrapped; test with errors.Is).
var (
	// ErrNotFound: the store holds no blob with that digest.
	ErrNotFound = errors.New("artifact: blob not found")
	// ErrDigestMismatch: bytes announced under one digest hashed to another.
	// Nothing was kept.
	ErrDigestMismatch = errors.New("artifact: digest mismatch")
	// ErrCorrupt: a stored blob no longer hashes to its name.
	ErrCorrupt = errors.New("artifact: stored blob is corrupt")
	// ErrLocked: another process has the store open.
	ErrLocked = errors.New("artifact: store is in use by another process")
	// ErrSizeMismatch: a transfer ended with more or fewer bytes than announced.
	ErrSizeMismatch = errors.New("artifact: size mismatch")
)

// copyBufSize is the buffer size the store reads and writes with.
const copyBufSize = 256 << 10

// Info describes a stored blob.
type Info struct {
	Digest  string
	Size    int64
	ModTime time.Time
}

// Store is a content-addressed blob store in one directory. Its methods are
// safe for concurrent use. Only one process may have a directory open at a
// time (OpenStore takes a lock on DIR/LOCK).
type Store struct {
	dir  string
	lock *os.File

	mu   sync.Mutex
	busy map[string]chan struct{} // digest → held while a Partial is open
}

// OpenStore opens the store in dir, creating it if needed. It removes any
// temporary files a crashed writer left behind, and partial uploads of
// blobs that are already complete; other partial uploads are kept so they
// can resume.
func OpenStore(dir string) (*Store, error) {
	for _, sub := range []string{"", "blobs", "tmp", "uploads", "owners"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("open store %s: %w", dir, err)
		}
	}
	lf, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	if err := lockFile(lf); err != nil {
		lf.Close()
		return nil, fmt.Errorf("open store %s: %w (%v)", dir, ErrLocked, err)
	}
	s := &Store{dir: dir, lock: lf, busy: map[string]chan struct{}{}}
	if err := s.cleanup(); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	return s, nil
}

// cleanup removes abandoned temporary files and useless partial uploads.
func (s *Store) cleanup() error {
	tmp := filepath.Join(s.dir, "tmp")
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(tmp, e.Name())); err != nil {
			return err
		}
	}
	up := filepath.Join(s.dir, "uploads")
	if err := s.cleanupPartials(up, true); err != nil {
		return err
	}
	return errors.Join(syncDir(tmp), syncDir(up))
}

// cleanupPartials removes, in one uploads folder, files that are not
// partial blobs and partial blobs whose blob is complete; top is the
// uploads folder itself, whose sub-folders hold the uploaders' partials.
func (s *Store) cleanupPartials(dir string, top bool) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if top && e.IsDir() && ValidOwner(e.Name()) {
			if err := s.cleanupPartials(filepath.Join(dir, e.Name()), false); err != nil {
				return err
			}
			continue
		}
		d, err := ParseDigest(e.Name())
		keep := err == nil && e.Type().IsRegular()
		if keep {
			if _, err := os.Stat(s.blobPath(d)); err == nil {
				keep = false
			}
		}
		if !keep {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return syncDir(dir)
}

// Close releases the store's lock. The Store must not be used afterwards.
func (s *Store) Close() error {
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close() // closing the file releases the flock
	s.lock = nil
	return err
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) blobPath(d string) string {
	return filepath.Join(s.dir, "blobs", d[:2], d)
}

// Path returns the file that holds (or would hold) the blob digest.
func (s *Store) Path(digest string) (string, error) {
	d, err := ParseDigest(digest)
	if err != nil {
		return "", err
	}
	return s.blobPath(d), nil
}

// Put stores the bytes of r and returns their digest and size. The digest is
// computed while writing; the blob becomes visible only once it is complete
// and synced. Putting a blob the store already has succeeds and keeps one
// copy.
func (s *Store) Put(ctx context.Context, r io.Reader) (digest string, size int64, err error) {
	return s.put(ctx, "", r)
}

// PutExpect stores the bytes of r under digest. If they hash to anything
// else it returns an error wrapping ErrDigestMismatch and keeps nothing.
func (s *Store) PutExpect(ctx context.Context, digest string, r io.Reader) (size int64, err error) {
	d, err := ParseDigest(digest)
	if err != nil {
		return 0, err
	}
	_, size, err = s.put(ctx, d, r)
	return size, err
}

func (s *Store) put(ctx context.Context, want string, r io.Reader) (digest string, size int64, err error) {
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "put-*")
	if err != nil {
		return "", 0, fmt.Errorf("put: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	size, err = copyCtx(ctx, io.MultiWriter(f, h), r)
	if err != nil {
		return "", size, fmt.Errorf("put: %w", err)
	}
	digest = hex.EncodeToString(h.Sum(nil))
	if want != "" && digest != want {
		return digest, size, fmt.Errorf("put %s: %w: the %d bytes received hash to %s; nothing kept", want, ErrDigestMismatch, size, digest)
	}
	if err = f.Sync(); err != nil {
		return digest, size, fmt.Errorf("put %s: %w", digest, err)
	}
	if err = f.Close(); err != nil {
		return digest, size, fmt.Errorf("put %s: %w", digest, err)
	}
	if err = s.commit(tmp, digest); err != nil {
		return digest, size, fmt.Errorf("put %s: %w", digest, err)
	}
	return digest, size, nil
}

// commit publishes the complete, synced and closed file tmp as the blob
// digest: rename into place, mark read-only, sync the directories. If the
// blob already exists tmp is removed instead.
func (s *Store) commit(tmp, digest string) error {
	final := s.blobPath(digest)
	if _, err := os.Stat(final); err == nil {
		return os.Remove(tmp) // same digest, same bytes: keep the one we have
	}
	shard := filepath.Dir(final)
	if _, err := os.Stat(shard); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(shard, 0o755); err != nil {
			return err
		}
		if err := syncDir(filepath.Dir(shard)); err != nil {
			return err
		}
	}
	// Rename is atomic: a racing writer of the same digest renames a file
	// with the same bytes, and readers see one whole file or the other.
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	// Read-only marks blobs as immutable; a crash before this leaves a
	// correct blob that is merely writable, so its failure is not fatal.
	_ = os.Chmod(final, 0o444)
	return errors.Join(syncDir(shard), syncDir(filepath.Dir(tmp)))
}

// Open opens the blob digest for reading.
func (s *Store) Open(digest string) (*os.File, error) {
	d, err := ParseDigest(digest)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", d, err)
	}
	return f, nil
}

// Stat describes the blob digest.
func (s *Store) Stat(digest string) (Info, error) {
	d, err := ParseDigest(digest)
	if err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, fmt.Errorf("stat %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", d, err)
	}
	return Info{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Has reports whether the store holds the blob digest.
func (s *Store) Has(digest string) (bool, error) {
	_, err := s.Stat(digest)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// List returns every stored blob, in digest order.
func (s *Store) List() ([]Info, error) {
	blobs := filepath.Join(s.dir, "blobs")
	shards, err := os.ReadDir(blobs)
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	var out []Info
	for _, sh := range shards {
		if !sh.IsDir() || len(sh.Name()) != 2 {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(blobs, sh.Name()))
		if err != nil {
			return nil, fmt.Errorf("list: %w", err)
		}
		for _, e := range ents {
			d, err := ParseDigest(e.Name())
			if err != nil || d[:2] != sh.Name() || !e.Type().IsRegular() {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue // deleted meanwhile
			}
			out = append(out, Info{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()})
		}
	}
	return out, nil
}

// Delete removes the blob digest.
func (s *Store) Delete(digest string) error {
	d, err := ParseDigest(digest)
	if err != nil {
		return err
	}
	p := s.blobPath(d)
	if err := os.Remove(p); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", d, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("delete %s: %w", d, err)
	}
	return syncDir(filepath.Dir(p))
}

// Verify re-reads the blob digest and checks that it still hashes to its
// name. A blob that does not is reported with ErrCorrupt.
func (s *Store) Verify(ctx context.Context, digest string) error {
	d, err := ParseDigest(digest)
	if err != nil {
		return err
	}
	f, err := s.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := copyCtx(ctx, h, f)
	if err != nil {
		return fmt.Errorf("verify %s: %w", digest, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d {
		return fmt.Errorf("verify %s: %w: its %d bytes hash to %s", d, ErrCorrupt, n, got)
	}
	return nil
}

// Partial is a blob being received in pieces (an upload or a fetch) that
// can be resumed after an interruption, even by another process: its bytes
// are kept in DIR/uploads/<digest> (the store's own fetches) or
// DIR/uploads/<owner>/<digest> (an uploader's) until Commit verifies and
// publishes them. Each owner has its own partial of a digest, so one
// uploader's bytes never end up in another's blob; only one Partial per
// owner and digest is open at a time.
type Partial struct {
	s       *Store
	owner   string
	digest  string
	f       *os.File
	h       hash.Hash
	n       int64
	release func()
}

// ResumePartial opens the store's own partial blob digest (see
// ResumePartialAs).
func (s *Store) ResumePartial(ctx context.Context, digest string) (*Partial, error) {
	return s.ResumePartialAs(ctx, "", digest)
}

// ValidOwner reports whether o may name the owner of partial uploads: 1 to
// 64 of a-z 0-9 _ - (a ledger key ID, or a fixed name such as "insecure").
func ValidOwner(o string) bool {
	if len(o) == 0 || len(o) > 64 {
		return false
	}
	for _, c := range o {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// ResumePartialAs opens owner's partial blob digest ("" is the store's
// own, as Fetch uses), creating it empty if there is none, and waits (until
// ctx is done) while another Partial of the same owner and digest is open.
// The existing bytes are re-hashed so that Commit can check the whole blob
// without reading it again.
func (s *Store) ResumePartialAs(ctx context.Context, owner, digest string) (*Partial, error) {
	return s.resumePartial(ctx, ctx, owner, digest)
}

// resumePartial is ResumePartialAs waiting for another Partial only until
// wait is done, and re-hashing the existing bytes until ctx is.
func (s *Store) resumePartial(ctx, wait context.Context, owner, digest string) (*Partial, error) {
	d, err := ParseDigest(digest)
	if err != nil {
		return nil, err
	}
	if owner != "" && !ValidOwner(owner) {
		return nil, fmt.Errorf("resume %s: %q is not a valid owner name", d, owner)
	}
	if owner != "" {
		if err := os.MkdirAll(filepath.Join(s.dir, "uploads", owner), 0o755); err != nil {
			return nil, fmt.Errorf("resume %s: %w", d, err)
		}
	}
	release, err := s.acquire(wait, owner+"/"+d)
	if err != nil {
		return nil, fmt.Errorf("resume %s: %w", d, err)
	}
	p := &Partial{s: s, owner: owner, digest: d, h: sha256.New(), release: release}
	p.f, err = os.OpenFile(s.partialPath(owner, d), os.O_RDWR|os.O_CREATE, 0o644)
	if err == nil {
		p.n, err = copyCtx(ctx, p.h, p.f) // leaves the offset at the end
	}
	if err != nil {
		if p.f != nil {
			p.f.Close()
		}
		release()
		return nil, fmt.Errorf("resume %s: %w", d, err)
	}
	return p, nil
}

// PartialSize returns how many bytes of blob digest the store holds in its
// own partial (0 if none).
func (s *Store) PartialSize(digest string) (int64, error) {
	return s.PartialSizeAs("", digest)
}

// PartialSizeAs returns how many bytes of blob digest owner's partial
// upload holds (0 if none).
func (s *Store) PartialSizeAs(owner, digest string) (int64, error) {
	d, err := ParseDigest(digest)
	if err != nil {
		return 0, err
	}
	if owner != "" && !ValidOwner(owner) {
		return 0, fmt.Errorf("partial %s: %q is not a valid owner name", d, owner)
	}
	fi, err := os.Stat(s.partialPath(owner, d))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// PruneUploads removes partial uploads (of every owner) not written to for
// longer than age, except those open now, and returns how many it removed.
// Nodes call it at start and now and then (Server.Maintain), so abandoned
// uploads do not fill the disk.
func (s *Store) PruneUploads(age time.Duration) (int, error) {
	up := filepath.Join(s.dir, "uploads")
	ents, err := os.ReadDir(up)
	if err != nil {
		return 0, fmt.Errorf("prune uploads: %w", err)
	}
	cutoff := time.Now().Add(-age)
	n := 0
	prune := func(owner string, ents []os.DirEntry) {
		for _, e := range ents {
			d, err := ParseDigest(e.Name())
			if err != nil {
				continue
			}
			fi, err := e.Info()
			if err != nil || !fi.ModTime().Before(cutoff) {
				continue
			}
			s.mu.Lock()
			_, busy := s.busy[owner+"/"+d]
			if !busy {
				if err := os.Remove(s.partialPath(owner, d)); err == nil {
					n++
				}
			}
			s.mu.Unlock()
		}
	}
	prune("", ents)
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || !ValidOwner(e.Name()) {
			continue
		}
		sub, err := os.ReadDir(filepath.Join(up, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		prune(e.Name(), sub)
		errs = append(errs, syncDir(filepath.Join(up, e.Name())))
	}
	errs = append(errs, syncDir(up))
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("prune uploads: %w", err)
	}
	return n, nil
}

// Usage returns the bytes owner holds in the store: stored, the blobs its
// uploads published (Partial.Commit of a Partial opened with
// ResumePartialAs records them), and partial, its partial uploads.
func (s *Store) Usage(owner string) (stored, partial int64, err error) {
	if !ValidOwner(owner) {
		return 0, 0, fmt.Errorf("usage: %q is not a valid owner name", owner)
	}
	ents, err := os.ReadDir(filepath.Join(s.dir, "owners", owner))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, 0, fmt.Errorf("usage of %s: %w", owner, err)
	}
	for _, e := range ents {
		d, err := ParseDigest(e.Name())
		if err != nil {
			continue
		}
		if fi, err := os.Stat(s.blobPath(d)); err == nil {
			stored += fi.Size()
		}
	}
	ents, err = os.ReadDir(filepath.Join(s.dir, "uploads", owner))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, 0, fmt.Errorf("usage of %s: %w", owner, err)
	}
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			partial += fi.Size()
		}
	}
	return stored, partial, nil
}

// Uploaders returns the owners whose uploads published blob d (see
// recordOwner), sorted; none for a blob the store's own holder put there.
func (s *Store) Uploaders(d string) ([]string, error) {
	if _, err := ParseDigest(d); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Join(s.dir, "owners"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("uploaders of %s: %w", d, err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() || !ValidOwner(e.Name()) {
			continue
		}
		if _, err := os.Stat(filepath.Join(s.dir, "owners", e.Name(), d)); err == nil {
			out = append(out, e.Name())
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("uploaders of %s: %w", d, err)
		}
	}
	return out, nil
}

// recordOwner notes that owner's upload published blob d (an empty file
// DIR/owners/<owner>/<d>), which Usage counts.
func (s *Store) recordOwner(owner, d string) error {
	dir := filepath.Join(s.dir, "owners", owner)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, d), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	return errors.Join(f.Close(), syncDir(dir))
}

func (s *Store) partialPath(owner, d string) string {
	return filepath.Join(s.dir, "uploads", owner, d)
}

func (s *Store) acquire(ctx context.Context, d string) (func(), error) {
	for {
		s.mu.Lock()
		ch, held := s.busy[d]
		if !held {
			ch = make(chan struct{})
			s.busy[d] = ch
			s.mu.Unlock()
			var once sync.Once
			return func() {
				once.Do(func() {
					s.mu.Lock()
					delete(s.busy, d)
					s.mu.Unlock()
					close(ch)
				})
			}, nil
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// Digest returns the digest the partial blob is announced under.
func (p *Partial) Digest() string { return p.digest }

// Offset returns how many bytes the partial blob holds.
func (p *Partial) Offset() int64 { return p.n }

// Write appends b to the partial blob.
func (p *Partial) Write(b []byte) (int, error) {
	n, err := p.f.Write(b)
	p.h.Write(b[:n])
	p.n += int64(n)
	return n, err
}

// Truncate discards every byte of the partial blob, to start it again.
func (p *Partial) Truncate() error {
	if err := p.f.Truncate(0); err != nil {
		return err
	}
	if _, err := p.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	p.h.Reset()
	p.n = 0
	return nil
}

// Close syncs the partial blob and keeps it for a later resume.
func (p *Partial) Close() error {
	if p.f == nil {
		return nil
	}
	err := errors.Join(p.f.Sync(), p.f.Close())
	p.f = nil
	p.release()
	return err
}

// Abort removes the partial blob.
func (p *Partial) Abort() error {
	if p.f == nil {
		return nil
	}
	p.f.Close()
	p.f = nil
	err := os.Remove(p.s.partialPath(p.owner, p.digest))
	p.release()
	return err
}

// Commit checks that the partial blob hashes to its digest and, if so,
// publishes it in the store. On a mismatch it removes the partial blob and
// returns an error wrapping ErrDigestMismatch. Either way the Partial is
// closed.
func (p *Partial) Commit() (Info, error) {
	if p.f == nil {
		return Info{}, fmt.Errorf("commit %s: partial already closed", p.digest)
	}
	got := hex.EncodeToString(p.h.Sum(nil))
	if got != p.digest {
		n := p.n
		p.Abort()
		return Info{}, fmt.Errorf("commit %s: %w: the %d bytes received hash to %s; nothing kept", p.digest, ErrDigestMismatch, n, got)
	}
	f := p.f
	p.f = nil
	defer p.release()
	// A crash from here on leaves the complete bytes either in uploads/
	// (a later upload resumes at the end and commits) or published.
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return Info{}, fmt.Errorf("commit %s: %w", p.digest, err)
	}
	if err := p.s.commit(f.Name(), p.digest); err != nil {
		return Info{}, fmt.Errorf("commit %s: %w", p.digest, err)
	}
	if p.owner != "" {
		// Usage counts the blob against its uploader; a lost record only
		// undercounts, so it does not fail the upload.
		_ = p.s.recordOwner(p.owner, p.digest)
	}
	return Info{Digest: p.digest, Size: p.n, ModTime: time.Now()}, nil
}

// copyCtx copies src to dst until EOF, checking ctx between buffers.
func copyCtx(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, copyBufSize)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, context.Cause(ctx)
		}
		k, rerr := src.Read(buf)
		if k > 0 {
			w, werr := dst.Write(buf[:k])
			n += int64(w)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
