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
	// AuthorizeUpload, when set, is asked before an upload is read: a
	// non-nil error (a gRPC status, such as PermissionDenied) refuses it.
	// Downloads and Stat stay open to every peer the transport admits.
	AuthorizeUpload func(ctx context.Context) error
}

// Server implements the fedtune.artifact.v1.Artifacts gRPC service over a
// Store.
type Server struct {
	artifactv1.UnimplementedArtifactsServer
	cfg ServerConfig
	log *slog.Logger
	m   *Metrics
}

// NewServer returns a Server for cfg.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("artifact: ServerConfig.Store is required")
	}
	s := &Server{cfg: cfg, log: cfg.Logger, m: cfg.Metrics}
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

// Upload implements artifactv1.ArtifactsServer.
func (s *Server) Upload(stream artifactv1.Artifacts_UploadServer) error {
	ctx := stream.Context()
	start := time.Now()
	if s.cfg.AuthorizeUpload != nil {
		if err := s.cfg.AuthorizeUpload(ctx); err != nil {
			s.m.Rejected.WithLabelValues("unauthorized").Inc()
			s.log.WarnContext(ctx, "upload refused", "peer", caller(ctx), "err", err)
			if _, ok := status.FromError(err); !ok {
				err = status.Errorf(codes.PermissionDenied, "upload: %v", err)
			}
			return err
		}
	}
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	h := req.GetHeader()
	if h == nil {
		s.m.Rejected.WithLabelValues("bad_request").Inc()
		return status.Error(codes.InvalidArgument, "upload: the first message must be a header (digest, size)")
	}
	d, err := ParseDigest(h.Digest)
	if err != nil {
		s.m.Rejected.WithLabelValues("bad_request").Inc()
		return status.Errorf(codes.InvalidArgument, "upload: %v", err)
	}
	if h.Size < 0 {
		s.m.Rejected.WithLabelValues("bad_request").Inc()
		return status.Errorf(codes.InvalidArgument, "upload %s: negative size %d", d, h.Size)
	}
	if s.cfg.MaxBlobSize > 0 && h.Size > s.cfg.MaxBlobSize {
		s.m.Rejected.WithLabelValues("too_large").Inc()
		return status.Errorf(codes.ResourceExhausted, "upload %s: %d bytes is more than this server's limit of %d", d, h.Size, s.cfg.MaxBlobSize)
	}
	log := s.log.With("digest", d, "peer", caller(ctx))
	if info, err := s.cfg.Store.Stat(d); err == nil {
		if info.Size != h.Size {
			s.m.Rejected.WithLabelValues("size_mismatch").Inc()
			return status.Errorf(codes.OutOfRange, "upload %s: announced %d bytes, but the blob with that digest has %d", d, h.Size, info.Size)
		}
		s.m.Uploads.WithLabelValues("existed").Inc()
		log.DebugContext(ctx, "upload: blob already stored")
		return stream.Send(&artifactv1.UploadResponse{Msg: &artifactv1.UploadResponse_Done{Done: &artifactv1.UploadDone{Digest: d, Size: info.Size, Existed: true}}})
	}
	p, err := s.cfg.Store.ResumePartial(ctx, d)
	if err != nil {
		return toStatus(err)
	}
	defer p.Close() // keeps the bytes received for a resume; no-op after Commit
	if info, err := s.cfg.Store.Stat(d); err == nil {
		// A concurrent upload of the same blob finished while we waited.
		p.Abort()
		s.m.Uploads.WithLabelValues("existed").Inc()
		return stream.Send(&artifactv1.UploadResponse{Msg: &artifactv1.UploadResponse_Done{Done: &artifactv1.UploadDone{Digest: d, Size: info.Size, Existed: true}}})
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
		req, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.InfoContext(ctx, "upload interrupted; partial kept", "received", p.Offset(), "size", h.Size, "err", err)
			return err
		}
		chunk := req.GetChunk()
		if req.GetHeader() != nil {
			s.m.Rejected.WithLabelValues("bad_request").Inc()
			return status.Errorf(codes.InvalidArgument, "upload %s: a second header at offset %d", d, p.Offset())
		}
		if p.Offset()+int64(len(chunk)) > h.Size {
			s.m.Rejected.WithLabelValues("size_mismatch").Inc()
			p.Abort()
			return status.Errorf(codes.OutOfRange, "upload %s: more than the announced %d bytes; nothing kept", d, h.Size)
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
	f, err := s.cfg.Store.Open(req.Digest)
	if err != nil {
		return toStatus(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return toStatus(err)
	}
	size := fi.Size()
	if req.Offset < 0 || req.Offset > size {
		return status.Errorf(codes.OutOfRange, "download %s: offset %d is outside the blob's %d bytes", req.Digest, req.Offset, size)
	}
	if _, err := f.Seek(req.Offset, io.SeekStart); err != nil {
		return toStatus(err)
	}
	if err := stream.Send(&artifactv1.DownloadResponse{Size: size}); err != nil {
		return err
	}
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
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return toStatus(err)
		}
	}
	s.m.Downloads.Inc()
	s.log.DebugContext(ctx, "download sent", "digest", req.Digest, "peer", caller(ctx), "offset", req.Offset, "size", size)
	return nil
}

// Stat implements artifactv1.ArtifactsServer.
func (s *Server) Stat(_ context.Context, req *artifactv1.StatRequest) (*artifactv1.StatResponse, error) {
	info, err := s.cfg.Store.Stat(req.Digest)
	if err != nil {
		return nil, toStatus(err)
	}
	return &artifactv1.StatResponse{Digest: info.Digest, Size: info.Size}, nil
}

// Status implements artifactv1.ArtifactsServer.
func (s *Server) Status(_ context.Context, req *artifactv1.StatusRequest) (*artifactv1.StatusResponse, error) {
	info, err := s.cfg.Store.Stat(req.Digest)
	if err == nil {
		return &artifactv1.StatusResponse{Digest: info.Digest, Complete: true, Received: info.Size}, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, toStatus(err)
	}
	n, err := s.cfg.Store.PartialSize(req.Digest)
	if err != nil {
		return nil, toStatus(err)
	}
	return &artifactv1.StatusResponse{Digest: req.Digest, Received: n}, nil
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
