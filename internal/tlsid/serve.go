package tlsid

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"time"

	"google.golang.org/grpc"
)

// StopGrace is how long Serve lets in-flight calls finish before it stops
// a server forcibly.
const StopGrace = 3 * time.Second

// ServerOptions returns the options that secure a gRPC server: plain text
// when insecure (behind an explicit --insecure flag), else
// ServerOption(key, allow).
func ServerOptions(insecure bool, key ed25519.PrivateKey, allow Verifier) ([]grpc.ServerOption, error) {
	if insecure {
		return []grpc.ServerOption{InsecureServerOption()}, nil
	}
	o, err := ServerOption(key, allow)
	if err != nil {
		return nil, err
	}
	return []grpc.ServerOption{o}, nil
}

// Serving is a gRPC server serving a listener, started by Serve.
type Serving struct {
	gs   *grpc.Server
	errc chan error
}

// Serve starts serving gs on ln in the background; Until stops it.
func Serve(gs *grpc.Server, ln net.Listener) *Serving {
	s := &Serving{gs: gs, errc: make(chan error, 1)}
	go func() { s.errc <- gs.Serve(ln) }()
	return s
}

// Until waits until ctx ends, serving fails or also (when not nil)
// delivers an error. It then calls stopping (when not nil) and stops the
// server: gracefully, or forcibly when calls outlast StopGrace. It returns
// the error that ended serving, nil when ctx ended or the server was
// stopped.
func (s *Serving) Until(ctx context.Context, also <-chan error, stopping func()) error {
	var err error
	select {
	case <-ctx.Done():
	case err = <-s.errc:
	case err = <-also:
	}
	if stopping != nil {
		stopping()
	}
	done := make(chan struct{})
	go func() { s.gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(StopGrace):
		s.gs.Stop()
	}
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}
