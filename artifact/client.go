package artifact

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	artifactv1 "github.com/fedtune/fedtune/api/artifact/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrUnavailable is wrapped by client errors when the server could not be
// reached or the connection failed: a wrong address, a TLS/plain-text
// mismatch, or a key ID the other side refused.
var ErrUnavailable = errors.New("artifact: server unavailable")

// ErrPermissionDenied is wrapped by client errors when the server refused
// the caller (its key may not upload, or may not download that blob).
var ErrPermissionDenied = errors.New("artifact: permission denied")

// ErrResourceExhausted is wrapped by client errors when the server refused
// an upload over one of its limits (maximum blob size, the uploader's
// quota or its bytes in flight).
var ErrResourceExhausted = errors.New("artifact: over a server limit")

// Client talks to an artifact server. Its methods are safe for concurrent
// use; set its fields before the first call.
type Client struct {
	api  artifactv1.ArtifactsClient
	conn *grpc.ClientConn // owned, when made by Dial

	// Retries is how many times a transfer interrupted by a transport
	// error is resumed before giving up (Dial and NewClient set 5).
	Retries int
	// Progress, if set, is called as bytes move with the bytes done and the
	// total (the total is -1 until known).
	Progress func(done, total int64)
}

// Dial connects to the artifact server at addr. opts must carry transport
// credentials (tlsid.DialOption, or tlsid.InsecureDialOption behind an
// explicit flag). The connection is made lazily; errors show on the first
// call.
func Dial(addr string, opts ...grpc.DialOption) (*Client, error) {
	all := append([]grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize))}, opts...)
	conn, err := grpc.NewClient(addr, all...)
	if err != nil {
		return nil, fmt.Errorf("artifact: dial %s: %w", addr, err)
	}
	c := NewClient(conn)
	c.conn = conn
	return c, nil
}

// NewClient returns a Client over an existing connection (which the caller
// closes).
func NewClient(conn grpc.ClientConnInterface) *Client {
	return &Client{api: artifactv1.NewArtifactsClient(conn), Retries: 5}
}

// Close closes the connection if Dial made it.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// fromStatus maps a gRPC error back to the package's sentinel errors.
func fromStatus(op string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", op, err)
	}
	var sentinel error
	switch st.Code() {
	case codes.NotFound:
		sentinel = ErrNotFound
	case codes.DataLoss:
		sentinel = ErrDigestMismatch
	case codes.OutOfRange:
		sentinel = ErrSizeMismatch
	case codes.InvalidArgument:
		sentinel = ErrBadDigest
	case codes.Unavailable:
		return fmt.Errorf("%s: %w (check the address, that both sides agree on TLS or --insecure, and that each side allows the other's key ID): %s", op, ErrUnavailable, st.Message())
	case codes.PermissionDenied:
		return fmt.Errorf("%s: %w (server: %s: %s)", op, ErrPermissionDenied, st.Code(), st.Message())
	case codes.ResourceExhausted:
		return fmt.Errorf("%s: %w (server: %s: %s)", op, ErrResourceExhausted, st.Code(), st.Message())
	case codes.Canceled:
		return fmt.Errorf("%s: %w", op, context.Canceled)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: %w", op, context.DeadlineExceeded)
	default:
		return fmt.Errorf("%s: server: %s: %s", op, st.Code(), st.Message())
	}
	if sentinel == ErrBadDigest && !strings.Contains(st.Message(), "digest") {
		return fmt.Errorf("%s: server: %s", op, st.Message())
	}
	return fmt.Errorf("%s: %w (server: %s)", op, sentinel, st.Message())
}

// retryable reports whether a transfer that failed with err may resume.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted, codes.Internal, codes.Unknown, codes.FailedPrecondition:
		return true
	}
	return false
}

func (c *Client) backoff(ctx context.Context, attempt int) error {
	d := time.Duration(50<<min(attempt, 5)) * time.Millisecond
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Stat describes the complete blob digest on the server (ErrNotFound if it
// has none).
func (c *Client) Stat(ctx context.Context, digest string) (Info, error) {
	d, err := ParseDigest(digest)
	if err != nil {
		return Info{}, err
	}
	r, err := c.api.Stat(ctx, &artifactv1.StatRequest{Digest: d})
	if err != nil {
		return Info{}, fromStatus("stat "+d, err)
	}
	return Info{Digest: r.Digest, Size: r.Size}, nil
}

// Has reports whether the server holds the complete blob digest.
func (c *Client) Has(ctx context.Context, digest string) (bool, error) {
	_, err := c.Stat(ctx, digest)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// UploadStatus is how much of a blob a server holds.
type UploadStatus struct {
	Complete bool  // the blob is stored and verified
	Received int64 // its size if complete, else the bytes of an unfinished upload
}

// Status asks the server how much of blob digest it holds.
func (c *Client) Status(ctx context.Context, digest string) (UploadStatus, error) {
	d, err := ParseDigest(digest)
	if err != nil {
		return UploadStatus{}, err
	}
	r, err := c.api.Status(ctx, &artifactv1.StatusRequest{Digest: d})
	if err != nil {
		return UploadStatus{}, fromStatus("status "+d, err)
	}
	return UploadStatus{Complete: r.Complete, Received: r.Received}, nil
}

// UploadResult describes a finished upload.
type UploadResult struct {
	Existed     bool  // the server had the blob already
	ResumedFrom int64 // offset the last attempt started at
	Sent        int64 // blob bytes sent by all attempts
}

// Upload sends size bytes read from r to the server as blob digest. It
// continues an upload the server holds part of (skipping those bytes of
// r), and after a transport error resumes from where the server got to,
// up to c.Retries times; rewinding r for that needs r to be an io.Seeker.
// A server that finds the bytes hash to another digest refuses them and
// keeps nothing; Upload then sends the whole blob once more from zero, and
// returns ErrDigestMismatch if that fails the same way.
func (c *Client) Upload(ctx context.Context, digest string, r io.Reader, size int64) (UploadResult, error) {
	d, err := ParseDigest(digest)
	if err != nil {
		return UploadResult{}, err
	}
	if size < 0 {
		return UploadResult{}, fmt.Errorf("upload %s: negative size %d", d, size)
	}
	u := &uploader{c: c, d: d, r: r, size: size}
	restarted := false
	for attempt := 0; ; attempt++ {
		err := u.attempt(ctx)
		if err == nil {
			return u.res, nil
		}
		if status.Code(err) == codes.DataLoss && !restarted && !u.fatal && ctx.Err() == nil {
			// The bytes the server held hashed to another digest: it
			// dropped them, so one more attempt sends the blob from zero
			// (a second mismatch means the reader's bytes are wrong).
			restarted = true
			continue
		}
		if attempt >= c.Retries || !retryable(ctx, err) || u.fatal {
			return u.res, fromStatus("upload "+d, err)
		}
		if err := c.backoff(ctx, attempt); err != nil {
			return u.res, fmt.Errorf("upload %s: %w", d, err)
		}
	}
}

type uploader struct {
	c     *Client
	d     string
	r     io.Reader
	size  int64
	pos   int64 // bytes consumed from r
	res   UploadResult
	fatal bool // a local error no retry can fix
	buf   []byte
}

func (u *uploader) seek(off int64) error {
	if off == u.pos {
		return nil
	}
	if s, ok := u.r.(io.Seeker); ok {
		if _, err := s.Seek(off, io.SeekStart); err != nil {
			return fmt.Errorf("seek to %d: %w", off, err)
		}
		u.pos = off
		return nil
	}
	if off < u.pos {
		return fmt.Errorf("the server needs bytes from offset %d again but the reader cannot rewind (not an io.Seeker)", off)
	}
	n, err := io.CopyN(io.Discard, u.r, off-u.pos)
	u.pos += n
	if err != nil {
		return fmt.Errorf("skip to %d: %w", off, err)
	}
	return nil
}

func (u *uploader) attempt(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := u.c.api.Upload(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&artifactv1.UploadRequest{Msg: &artifactv1.UploadRequest_Header{Header: &artifactv1.UploadHeader{Digest: u.d, Size: u.size}}}); err != nil {
		_, rerr := stream.Recv()
		return firstErr(rerr, err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return err
	}
	if done := resp.GetDone(); done != nil {
		u.res.Existed = done.Existed
		return nil
	}
	ready := resp.GetReady()
	if ready == nil {
		u.fatal = true
		return status.Error(codes.Internal, "server sent neither ready nor done")
	}
	if ready.Offset < 0 || ready.Offset > u.size {
		u.fatal = true
		return status.Errorf(codes.Internal, "server asked to resume at offset %d of %d", ready.Offset, u.size)
	}
	if err := u.seek(ready.Offset); err != nil {
		u.fatal = true
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	u.res.ResumedFrom = ready.Offset
	u.progress()
	if u.buf == nil {
		u.buf = make([]byte, ChunkSize)
	}
	msg := &artifactv1.UploadRequest_Chunk{}
	req := &artifactv1.UploadRequest{Msg: msg}
	for u.pos < u.size {
		n, rerr := io.ReadFull(u.r, u.buf[:min(int64(len(u.buf)), u.size-u.pos)])
		if n > 0 {
			msg.Chunk = u.buf[:n] // Send encodes before returning
			if err := stream.Send(req); err != nil {
				_, rerr := stream.Recv() // the server's reason, if it ended the call
				return firstErr(rerr, err)
			}
			u.pos += int64(n)
			u.res.Sent += int64(n)
			u.progress()
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			u.fatal = true
			return status.Errorf(codes.OutOfRange, "the reader ended at %d of the announced %d bytes", u.pos, u.size)
		}
		if rerr != nil {
			u.fatal = true
			return status.Errorf(codes.Aborted, "read: %v", rerr)
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	resp, err = stream.Recv()
	if err != nil {
		return err
	}
	if resp.GetDone() == nil {
		u.fatal = true
		return status.Error(codes.Internal, "server did not confirm the upload")
	}
	return nil
}

func (u *uploader) progress() {
	if u.c.Progress != nil {
		u.c.Progress(u.pos, u.size)
	}
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil && e != io.EOF {
			return e
		}
	}
	return io.ErrUnexpectedEOF
}

// UploadFile hashes the file at path and uploads it, resuming as Upload
// does. It returns the file's digest.
func (c *Client) UploadFile(ctx context.Context, path string) (string, UploadResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", UploadResult{}, fmt.Errorf("upload: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	size, err := copyCtx(ctx, h, f)
	if err != nil {
		return "", UploadResult{}, fmt.Errorf("upload %s: hash: %w", path, err)
	}
	d := hex.EncodeToString(h.Sum(nil))
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return d, UploadResult{}, fmt.Errorf("upload %s: %w", path, err)
	}
	res, err := c.Upload(ctx, d, f, size)
	return d, res, err
}

// DownloadFrom writes the bytes of blob digest from offset on to w and
// returns how many it wrote and the blob's total size. It does not verify
// the digest (it sees only part of the blob) and does not retry; Download
// and Fetch do both.
func (c *Client) DownloadFrom(ctx context.Context, digest string, offset int64, w io.Writer) (n, size int64, err error) {
	d, err := ParseDigest(digest)
	if err != nil {
		return 0, -1, err
	}
	n, size, err = c.downloadRange(ctx, d, offset, w, nil)
	if err != nil {
		return n, size, fromStatus("download "+d, err)
	}
	return n, size, nil
}

// downloadRange streams d from offset to w. base is added to progress
// counts. Errors are raw gRPC errors, or local write errors.
func (c *Client) downloadRange(ctx context.Context, d string, offset int64, w io.Writer, onSize func(int64)) (n, size int64, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.api.Download(ctx, &artifactv1.DownloadRequest{Digest: d, Offset: offset})
	if err != nil {
		return 0, -1, err
	}
	first, err := stream.Recv()
	if err != nil {
		return 0, -1, err
	}
	size = first.Size
	if onSize != nil {
		onSize(size)
	}
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, size, err
		}
		if offset+n+int64(len(m.Chunk)) > size {
			return n, size, status.Errorf(codes.OutOfRange, "server sent more than the blob's %d bytes", size)
		}
		k, werr := w.Write(m.Chunk)
		n += int64(k)
		if werr != nil {
			return n, size, &writeError{werr}
		}
		if c.Progress != nil {
			c.Progress(offset+n, size)
		}
	}
	if offset+n != size {
		return n, size, status.Errorf(codes.Unavailable, "stream ended at %d of %d bytes", offset+n, size)
	}
	return n, size, nil
}

// writeError marks a local write failure, which no retry fixes.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// Download writes blob digest to w, hashing it as it streams, and returns
// its size. After a transport error it resumes from the bytes already
// written, up to c.Retries times. If the bytes do not hash to digest it
// returns ErrDigestMismatch; w has then received bad bytes, so callers
// write to a temporary place and keep it only on success (Fetch does).
func (c *Client) Download(ctx context.Context, digest string, w io.Writer) (int64, error) {
	d, err := ParseDigest(digest)
	if err != nil {
		return 0, err
	}
	h := sha256.New()
	mw := io.MultiWriter(w, h)
	var pos, size int64
	for attempt := 0; ; attempt++ {
		n, sz, err := c.downloadRange(ctx, d, pos, mw, nil)
		pos += n
		if sz >= 0 {
			size = sz
		}
		if err == nil {
			break
		}
		var we *writeError
		if errors.As(err, &we) || attempt >= c.Retries || !retryable(ctx, err) {
			return pos, fromStatus("download "+d, err)
		}
		if err := c.backoff(ctx, attempt); err != nil {
			return pos, fmt.Errorf("download %s: %w", d, err)
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d {
		return pos, fmt.Errorf("download %s: %w: the %d bytes received hash to %s", d, ErrDigestMismatch, size, got)
	}
	return pos, nil
}

// Fetch copies blob digest from the server into store, unless store has it
// already. The bytes go to the store's partial area first, so a Fetch that
// is interrupted (even by a crash) continues from there next time; the blob
// is published only once its digest checks; if it does not, Fetch starts
// once more from zero before returning ErrDigestMismatch.
func (c *Client) Fetch(ctx context.Context, digest string, store *Store) (Info, error) {
	d, err := ParseDigest(digest)
	if err != nil {
		return Info{}, err
	}
	if info, err := store.Stat(d); err == nil {
		return info, nil
	}
	p, err := store.ResumePartial(ctx, d)
	if err != nil {
		return Info{}, fmt.Errorf("fetch %s: %w", d, err)
	}
	defer p.Close()
	if info, err := store.Stat(d); err == nil {
		p.Abort() // a concurrent Fetch finished while we waited
		return info, nil
	}
	restarted, err := c.fill(ctx, d, p)
	if err != nil {
		return Info{}, err
	}
	info, err := p.Commit()
	if errors.Is(err, ErrDigestMismatch) && !restarted {
		// The bytes held from an earlier fetch (or this one's) were bad:
		// Commit dropped them; fetch the whole blob once more from zero.
		return c.fetchFromZero(ctx, d, store)
	}
	if err != nil {
		return Info{}, fmt.Errorf("fetch: %w", err)
	}
	return info, nil
}

// fill downloads the rest of blob d into p, from p.Offset(), retrying
// what is worth retrying. Partial bytes longer than the blob are dropped
// and the download starts again from zero, once; restarted says so.
func (c *Client) fill(ctx context.Context, d string, p *Partial) (restarted bool, err error) {
	for attempt := 0; ; attempt++ {
		_, _, err := c.downloadRange(ctx, d, p.Offset(), p, nil)
		if err == nil {
			return restarted, nil
		}
		if status.Code(err) == codes.OutOfRange && p.Offset() > 0 && !restarted {
			restarted = true
			if terr := p.Truncate(); terr != nil {
				return restarted, fmt.Errorf("fetch %s: %w", d, terr)
			}
			continue
		}
		var we *writeError
		if errors.As(err, &we) || attempt >= c.Retries || !retryable(ctx, err) {
			return restarted, fromStatus("fetch "+d, err)
		}
		if err := c.backoff(ctx, attempt); err != nil {
			return restarted, fmt.Errorf("fetch %s: %w", d, err)
		}
	}
}

// fetchFromZero fetches d into store with a new, empty partial, once.
func (c *Client) fetchFromZero(ctx context.Context, d string, store *Store) (Info, error) {
	p, err := store.ResumePartial(ctx, d)
	if err != nil {
		return Info{}, fmt.Errorf("fetch %s: %w", d, err)
	}
	defer p.Close()
	if err := p.Truncate(); err != nil {
		return Info{}, fmt.Errorf("fetch %s: %w", d, err)
	}
	if _, err := c.fill(ctx, d, p); err != nil {
		return Info{}, err
	}
	info, err := p.Commit()
	if err != nil {
		return Info{}, fmt.Errorf("fetch (from zero after a digest mismatch): %w", err)
	}
	return info, nil
}
