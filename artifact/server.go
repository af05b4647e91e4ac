package artifact

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	artifactv1 "github.com/fedtune/fedtune/api/artifact/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ChunkSize is the most blob bytes one message carries.
const ChunkSize = 256 << 10

// maxMsgSize bounds every gRPC message of the service: 1 MiB, well above a
// chunk plus its framing, so no peer can make the other buffer more.
const maxMsgSize = 1 << 20

// ServerConfig configures a Server.
type ServerConfig struct {
	// Store holds the blobs. Required.
	Store *Store
	// Logger receives one line per finished transfer (nil: discard).
	Logger *slog.Logger
	// Metrics counts traffic (nil: NewMetrics(nil)).
	Metrics *Metrics
	// MaxBlobSize refuses uploads announcing more bytes (0: no limit).
	MaxBlobSize int64
	// MemberQuota bounds the bytes one uploader may hold in the store: the
	// blobs its uploads published plus its partial uploads, with the upload
	// it starts (0: no limit). Uploaders are told apart by their TLS key
	// ID; every plain-text peer counts as one uploader, "insecure".
	MemberQuota int64
	// MemberInFlight bounds the bytes one uploader's uploads under way may
	// announce together (0: no limit).
	MemberInFlight int64
	// IdleTimeout ends an upload that receives nothing, or a download whose
	// reader takes nothing, for this long (0: DefaultIdleTimeout). The
	// bytes an upload received are kept for a resume.
	IdleTimeout time.Duration
	// PruneAfter is the age (time since the last write) after which
	// Maintain removes a partial upload (0: DefaultPruneAfter).
	PruneAfter time.Duration
	// AuthorizeUpload, when set, is asked before an upload is read (and
	// before Status answers): a non-nil error (a gRPC status, such as
	// PermissionDenied) refuses it.
	AuthorizeUpload func(ctx context.Context) error
	// AuthorizeDownload, when set, is asked before blob digest (a parsed
	// digest) is sent or described by Stat: a non-nil error refuses it.
	// Upload and Status ask it too, and tell a caller it refuses nothing
	// about the blob: its upload runs as for an absent blob (all bytes
	// sent, the digest checked, the stored copy kept), and Status reports
	// only the caller's own partial upload. Without it every peer the
	// transport admits may read every blob.
	AuthorizeDownload func(ctx context.Context, digest string) error
}

// Defaults of ServerConfig.
const (
	DefaultIdleTimeout = time.Minute
	DefaultPruneAfter  = 24 * time.Hour
)

// InsecureOwner is the uploader name every plain-text (no TLS identity)
// peer's partial uploads and quota are kept under.
const InsecureOwner = "insecure"

// Server implements the fedtune.artifact.v1.Artifacts gRPC service over a
// Store.
type Server struct {
	artifactv1.UnimplementedArtifactsServer
	cfg ServerConfig
	log *slog.Logger
	m   *Metrics

	mu       sync.Mutex
	inFlight map[string]int64 // uploader → bytes its uploads under way announced
}

// NewServer returns a Server for cfg.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("artifact: ServerConfig.Store is required")
	}
	if cfg.MaxBlobSize < 0 || cfg.MemberQuota < 0 || cfg.MemberInFlight < 0 || cfg.IdleTimeout < 0 || cfg.PruneAfter < 0 {
		return nil, errors.New("artifact: ServerConfig limits must not be negative")
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.PruneAfter == 0 {
		cfg.PruneAfter = DefaultPruneAfter
	}
	s := &Server{cfg: cfg, log: cfg.Logger, m: cfg.Metrics, inFlight: map[string]int64{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.m == nil {
		s.m, _ = NewMetrics(nil)
	}
	return s, nil
}

// ServerOptions returns the gRPC server options the service needs (message
// size bounds); add transport credentials (package internal/tlsid).
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(maxMsgSize), grpc.MaxSendMsgSize(maxMsgSize)}
}

// Register adds the service to a gRPC server shared with other services.
// That server should be made with ServerOptions.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	artifactv1.RegisterArtifactsServer(r, s)
}

// Serve serves the service on ln until ctx is done, then stops gracefully
// (waiting at most a few seconds for transfers in flight). opts carry the
// transport credentials: tlsid.ServerOption, or tlsid.InsecureServerOption
// behind an explicit flag. It returns nil after ctx is done. The service
// reuses its chunk buffers once Send returns, so no stats handler given in
// opts may keep messages after the call that sent them.
func (s *Server) Serve(ctx context.Context, ln net.Listener, opts ...grpc.ServerOption) error {
	gs := grpc.NewServer(append(ServerOptions(), opts...)...)
	s.Register(gs)
	mctx, stopMaintain := context.WithCancel(ctx)
	defer stopMaintain()
	go s.Maintain(mctx)
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(ln) }()
	s.log.InfoContext(ctx, "artifact server listening", "addr", ln.Addr().String(), "dir", s.cfg.Store.Dir())
	select {
	case err := <-errc:
		return fmt.Errorf("artifact serve: %w", err)
	case <-ctx.Done():
	}
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		gs.Stop()
	}
	return nil
}

// Maintain prunes abandoned partial uploads (older than PruneAfter) now
// and then every PruneAfter/4 (at most hourly) until ctx is done. Serve
// runs it; a server shared through Register needs its own goroutine.
func (s *Server) Maintain(ctx context.Context) {
	every := min(s.cfg.PruneAfter/4, time.Hour)
	every = max(every, time.Second)
	for {
		n, err := s.cfg.Store.PruneUploads(s.cfg.PruneAfter)
		if err != nil {
			s.log.WarnContext(ctx, "pruning partial uploads", "err", err)
		} else if n > 0 {
			s.log.InfoContext(ctx, "pruned abandoned partial uploads", "count", n, "older_than", s.cfg.PruneAfter)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// owner names the uploader of a call: its TLS key ID, else InsecureOwner.
func owner(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			if pub, ok := ti.State.PeerCertificates[0].PublicKey.(ed25519.PublicKey); ok {
				return DigestOf(pub)
			}
		}
	}
	return InsecureOwner
}

// caller names the peer of a call for logs: its key ID on TLS, else its
// address.
func caller(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "unknown"
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
		if pub, ok := ti.State.PeerCertificates[0].PublicKey.(ed25519.PublicKey); ok {
			return DigestOf(pub) // the ledger key ID, from the key the peer proved it holds
		}
	}
	return p.Addr.String()
}

// reject counts a refused transfer under reason and returns err.
func (s *Server) reject(reason string, err error) error {
	s.m.Rejected.WithLabelValues(reason).Inc()
	return err
}

// recvResult is one message (or the end) of an upload stream.
type recvResult struct {
	req *artifactv1.UploadRequest
	err error
}

// idleReceiver receives an upload stream's messages on its own goroutine,
// so that the handler can stop waiting after the idle timeout.
type idleReceiver struct {
	msgs chan recvResult
	stop chan struct{}
	idle time.Duration
}

func newIdleReceiver(stream artifactv1.Artifacts_UploadServer, idle time.Duration) *idleReceiver {
	r := &idleReceiver{msgs: make(chan recvResult), stop: make(chan struct{}), idle: idle}
	go func() {
		for {
			req, err := stream.Recv()
			select {
			case r.msgs <- recvResult{req, err}:
			case <-r.stop:
				return // the handler returned; the stream is done
			}
			if err != nil {
				return
			}
		}
	}()
	return r
}

// errIdle marks a stream closed for idleness.
var errIdle = errors.New("idle")

func (r *idleReceiver) next() (*artifactv1.UploadRequest, error) {
	t := time.NewTimer(r.idle)
	defer t.Stop()
	select {
	case m := <-r.msgs:
		return m.req, m.err
	case <-t.C:
		return nil, errIdle
	}
}

func (r *idleReceiver) close() { close(r.stop) }

// reserve admits an upload of n bytes of d by uploader o: it refuses it
// (ResourceExhausted) over MemberInFlight, or over MemberQuota counting
// what o stored, its other partial uploads and what its uploads under way
// announced; else it adds n to o's bytes in flight until release.
func (s *Server) reserve(o string, d string, n int64) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	flying := s.inFlight[o]
	if lim := s.cfg.MemberInFlight; lim > 0 && flying+n > lim {
		return nil, s.reject("quota_in_flight", status.Errorf(codes.ResourceExhausted, "upload %s: uploader %s has %d bytes of uploads under way; %d more is over its limit of %d bytes in flight; nothing kept",
			d, abbrevID(o), flying, n, lim))
	}
	if lim := s.cfg.MemberQuota; lim > 0 {
		stored, partial, err := s.cfg.Store.Usage(o)
		if err != nil {
			return nil, toStatus(err)
		}
		own, err := s.cfg.Store.PartialSizeAs(o, d)
		if err != nil {
			return nil, toStatus(err)
		}
		// Bytes already written by uploads under way count twice (partial
		// and announced): the bound errs on the safe side.
		if used := stored + (partial - own) + flying; used+n > lim {
			return nil, s.reject("quota", status.Errorf(codes.ResourceExhausted, "upload %s: uploader %s holds %d bytes here (%d stored, %d in partial uploads, %d announced by uploads under way); %d more is over its quota of %d bytes; nothing kept",
				d, abbrevID(o), used, stored, partial-own, flying, n, lim))
		}
	}
	s.inFlight[o] += n
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.inFlight[o] -= n; s.inFlight[o] <= 0 {
			delete(s.inFlight, o)
		}
	}, nil
}

// abbrevID shortens a key ID for messages.
func abbrevID(id string) string {
	if len(id) > 12 {
		return id[:12] + "…"
	}
	return id
}

// Upload implements artifactv1.ArtifactsServer.
func (s *Server) Upload(stream artifactv1.Artifacts_UploadServer) error {
	ctx := stream.Context()
	start := time.Now()
	if s.cfg.AuthorizeUpload != nil {
		if err := s.cfg.AuthorizeUpload(ctx); err != nil {
			s.log.WarnContext(ctx, "upload refused", "peer", caller(ctx), "err", err)
			if _, ok := status.FromError(err); !ok {
				err = status.Errorf(codes.PermissionDenied, "upload: %v", err)
			}
			return s.reject("unauthorized", err)
		}
	}
	rcv := newIdleReceiver(stream, s.cfg.IdleTimeout)
	defer rcv.close()
	req, err := rcv.next()
	if err == errIdle {
		return s.reject("idle", status.Errorf(codes.DeadlineExceeded, "upload: no header within the idle timeout of %s; the server closed the stream", s.cfg.IdleTimeout))
	}
	if err != nil {
		return err
	}
	h := req.GetHeader()
	if h == nil {
		return s.reject("bad_request", status.Error(codes.InvalidArgument, "upload: the first message must be a header (digest, size)"))
	}
	d, err := ParseDigest(h.Digest)
	if err != nil {
		return s.reject("bad_request", status.Errorf(codes.InvalidArgument, "upload: %v", err))
	}
	if h.Size < 0 {
		return s.reject("bad_request", status.Errorf(codes.InvalidArgument, "upload %s: negative size %d", d, h.Size))
	}
	if s.cfg.MaxBlobSize > 0 && h.Size > s.cfg.MaxBlobSize {
		return s.reject("too_large", status.Errorf(codes.ResourceExhausted, "upload %s: the announced size of %d bytes is more than this server's maximum blob size of %d bytes; nothing kept", d, h.Size, s.cfg.MaxBlobSize))
	}
	who := owner(ctx)
	log := s.log.With("digest", d, "peer", caller(ctx))
	existed := func(info Info) error {
		s.m.Uploads.WithLabelValues("existed").Inc()
		return stream.Send(&artifactv1.UploadResponse{Msg: &artifactv1.UploadResponse_Done{Done: &artifactv1.UploadDone{Digest: d, Size: info.Size, Existed: true}}})
	}
	// Only a caller who may read the blob learns that it is stored. Any
	// other caller's upload runs as if the blob were absent: it sends every
	// byte, and the store keeps the one copy it has (Commit). So a second
	// honest uploader of the same bytes still succeeds, and a prober
	// without them ends in the digest mismatch an absent blob gives.
	known := s.mayKnow(ctx, d)
	if info, err := s.cfg.Store.Stat(d); err == nil && known {
		if info.Size != h.Size {
			return s.reject("size_mismatch", status.Errorf(codes.OutOfRange, "upload %s: announced %d bytes, but the blob with that digest has %d", d, h.Size, info.Size))
		}
		log.DebugContext(ctx, "upload: blob already stored")
		return existed(info)
	}
	release, err := s.reserve(who, d, h.Size)
	if err != nil {
		return err
	}
	defer release()
	// Waiting for this uploader's other upload of the same blob is bounded
	// by the idle timeout, as that upload is.
	wait, cancel := context.WithTimeout(ctx, s.cfg.IdleTimeout)
	p, err := s.cfg.Store.resumePartial(ctx, wait, who, d)
	cancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && wait.Err() != nil && ctx.Err() == nil {
			return status.Errorf(codes.Aborted, "upload %s: another upload of this blob by %s is under way; try again", d, abbrevID(who))
		}
		return toStatus(err)
	}
	defer p.Close() // keeps the bytes received for a resume; no-op after Commit
	if info, err := s.cfg.Store.Stat(d); err == nil && known {
		// An upload of the same blob finished while we waited.
		p.Abort()
		return existed(info)
	}
	if p.Offset() > h.Size {
		if err := p.Truncate(); err != nil {
			return toStatus(err)
		}
	}
	from := p.Offset()
	if err := stream.Send(&artifactv1.UploadResponse{Msg: &artifactv1.UploadResponse_Ready{Ready: &artifactv1.UploadReady{Offset: from}}}); err != nil {
		return err
	}
	for {
		req, err := rcv.next()
		if err == io.EOF {
			break
		}
		if err == errIdle {
			log.InfoContext(ctx, "upload idle; closed, partial kept", "received", p.Offset(), "size", h.Size, "idle_timeout", s.cfg.IdleTimeout)
			return s.reject("idle", status.Errorf(codes.DeadlineExceeded, "upload %s: nothing received for %s (the idle timeout) at %d of %d bytes; the server closed the stream, resume from %d", d, s.cfg.IdleTimeout, p.Offset(), h.Size, p.Offset()))
		}
		if err != nil {
			log.InfoContext(ctx, "upload interrupted; partial kept", "received", p.Offset(), "size", h.Size, "err", err)
			return err
		}
		chunk := req.GetChunk()
		if req.GetHeader() != nil {
			return s.reject("bad_request", status.Errorf(codes.InvalidArgument, "upload %s: a second header at offset %d", d, p.Offset()))
		}
		if p.Offset()+int64(len(chunk)) > h.Size {
			p.Abort()
			return s.reject("size_mismatch", status.Errorf(codes.OutOfRange, "upload %s: more than the announced %d bytes; nothing kept", d, h.Size))
		}
		if _, err := p.Write(chunk); err != nil {
			return toStatus(fmt.Errorf("upload %s: %w", d, err))
		}
		s.m.BytesIn.Add(float64(len(chunk)))
	}
	if p.Offset() < h.Size {
		return status.Errorf(codes.FailedPrecondition, "upload %s: stream ended at %d of %d bytes; the bytes are kept, resume from %d", d, p.Offset(), h.Size, p.Offset())
	}
	info, err := p.Commit()
	if err != nil {
		if errors.Is(err, ErrDigestMismatch) {
			s.m.Rejected.WithLabelValues("digest_mismatch").Inc()
			log.WarnContext(ctx, "upload rejected", "err", err)
		}
		return toStatus(err)
	}
	s.m.Uploads.WithLabelValues("stored").Inc()
	el := time.Since(start)
	log.InfoContext(ctx, "upload stored", "size", info.Size, "resumed_from", from, "elapsed", el.Round(time.Millisecond), "MBps", mbps(info.Size-from, el))
	return stream.Send(&artifactv1.UploadResponse{Msg: &artifactv1.UploadResponse_Done{Done: &artifactv1.UploadDone{Digest: d, Size: info.Size, Received: info.Size - from}}})
}

// Download implements artifactv1.ArtifactsServer.
func (s *Server) Download(req *artifactv1.DownloadRequest, stream artifactv1.Artifacts_DownloadServer) error {
	ctx := stream.Context()
	d, err := ParseDigest(req.Digest)
	if err != nil {
		return s.reject("bad_request", status.Errorf(codes.InvalidArgument, "download: %v", err))
	}
	if s.cfg.AuthorizeDownload != nil {
		if err := s.cfg.AuthorizeDownload(ctx, d); err != nil {
			s.log.WarnContext(ctx, "download refused", "digest", d, "peer", caller(ctx), "err", err)
			if _, ok := status.FromError(err); !ok {
				err = status.Errorf(codes.PermissionDenied, "download %s: %v", d, err)
			}
			return s.reject("download_denied", err)
		}
	}
	f, err := s.cfg.Store.Open(d)
	if err != nil {
		return toStatus(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return toStatus(err)
	}
	size := fi.Size()
	if req.Offset < 0 || req.Offset > size {
		f.Close()
		return status.Errorf(codes.OutOfRange, "download %s: offset %d is outside the blob's %d bytes", d, req.Offset, size)
	}
	if _, err := f.Seek(req.Offset, io.SeekStart); err != nil {
		f.Close()
		return toStatus(err)
	}
	// The chunks are sent on their own goroutine so that a reader that
	// stops taking them (Send blocks on flow control) is cut off after the
	// idle timeout; returning ends the stream, which unblocks Send.
	progress := make(chan struct{}, 1)
	errc := make(chan error, 1)
	go func() {
		defer f.Close()
		errc <- s.sendBlob(stream, f, size, progress)
	}()
	t := time.NewTimer(s.cfg.IdleTimeout)
	defer t.Stop()
	for {
		select {
		case err := <-errc:
			if err != nil {
				return err
			}
			s.m.Downloads.Inc()
			s.log.DebugContext(ctx, "download sent", "digest", d, "peer", caller(ctx), "offset", req.Offset, "size", size)
			return nil
		case <-progress:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
			t.Reset(s.cfg.IdleTimeout)
		case <-t.C:
			s.log.InfoContext(ctx, "download idle; closed", "digest", d, "peer", caller(ctx), "idle_timeout", s.cfg.IdleTimeout)
			return s.reject("idle", status.Errorf(codes.DeadlineExceeded, "download %s: the reader took nothing for %s (the idle timeout); the server closed the stream", d, s.cfg.IdleTimeout))
		}
	}
}

// sendBlob sends the size header and then f's chunks, signalling progress
// after each message.
func (s *Server) sendBlob(stream artifactv1.Artifacts_DownloadServer, f *os.File, size int64, progress chan<- struct{}) error {
	tick := func() {
		select {
		case progress <- struct{}{}:
		default:
		}
	}
	if err := stream.Send(&artifactv1.DownloadResponse{Size: size}); err != nil {
		return err
	}
	tick()
	buf := make([]byte, ChunkSize)
	msg := &artifactv1.DownloadResponse{}
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			msg.Chunk = buf[:n] // SendMsg encodes before returning, so buf may be reused
			if err := stream.Send(msg); err != nil {
				return err
			}
			s.m.BytesOut.Add(float64(n))
			tick()
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return toStatus(err)
		}
	}
}

// Stat implements artifactv1.ArtifactsServer. It tells only those whom
// AuthorizeDownload lets read the blob.
func (s *Server) Stat(ctx context.Context, req *artifactv1.StatRequest) (*artifactv1.StatResponse, error) {
	d, err := ParseDigest(req.Digest)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "stat: %v", err)
	}
	if s.cfg.AuthorizeDownload != nil {
		if err := s.cfg.AuthorizeDownload(ctx, d); err != nil {
			if _, ok := status.FromError(err); !ok {
				err = status.Errorf(codes.PermissionDenied, "stat %s: %v", d, err)
			}
			return nil, s.reject("download_denied", err)
		}
	}
	info, err := s.cfg.Store.Stat(d)
	if err != nil {
		return nil, toStatus(err)
	}
	return &artifactv1.StatResponse{Digest: info.Digest, Size: info.Size}, nil
}

// mayKnow reports whether the caller may learn that blob d is stored, and
// its size: whoever AuthorizeDownload lets read it (everyone when it is not
// set). It is asked before the store is looked at, whether or not the blob
// is there, so that neither an answer nor its timing depends on that; a
// refusal for any reason (the ledger unreachable included) only makes the
// caller's upload send its bytes.
func (s *Server) mayKnow(ctx context.Context, d string) bool {
	if s.cfg.AuthorizeDownload == nil {
		return true
	}
	return s.cfg.AuthorizeDownload(ctx, d) == nil
}

// Status implements artifactv1.ArtifactsServer: a complete blob, to a
// caller who may read it, or how much of it the caller's own partial
// upload holds.
func (s *Server) Status(ctx context.Context, req *artifactv1.StatusRequest) (*artifactv1.StatusResponse, error) {
	if s.cfg.AuthorizeUpload != nil {
		// Status serves uploaders: it answers only those who may upload.
		if err := s.cfg.AuthorizeUpload(ctx); err != nil {
			if _, ok := status.FromError(err); !ok {
				err = status.Errorf(codes.PermissionDenied, "status: %v", err)
			}
			return nil, s.reject("unauthorized", err)
		}
	}
	d, err := ParseDigest(req.Digest)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "status: %v", err)
	}
	// A complete blob is reported only to those who may read it; anyone
	// else hears of their own partial upload alone, as if it were absent.
	if s.mayKnow(ctx, d) {
		info, err := s.cfg.Store.Stat(d)
		if err == nil {
			return &artifactv1.StatusResponse{Digest: info.Digest, Complete: true, Received: info.Size}, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, toStatus(err)
		}
	}
	n, err := s.cfg.Store.PartialSizeAs(owner(ctx), d)
	if err != nil {
		return nil, toStatus(err)
	}
	return &artifactv1.StatusResponse{Digest: d, Received: n}, nil
}

// toStatus maps store errors to gRPC status codes; fromStatus in the client
// maps them back.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, ErrBadDigest):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrNotFound), errors.Is(err, os.ErrNotExist):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrDigestMismatch):
		return status.Error(codes.DataLoss, err.Error())
	case errors.Is(err, ErrSizeMismatch):
		return status.Error(codes.OutOfRange, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// mbps is the rate of n bytes in d, in MB/s (10^6 bytes).
func mbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / 1e6 / d.Seconds()
}
