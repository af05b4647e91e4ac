package coordinator

import (
	"context"
	"errors"

	"github.com/fedtune/fedtune/internal/tlsid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// mayUpload decides who may store blobs in the coordinator's artifact
// store (artifact.ServerConfig.AuthorizeUpload): without TLS anyone; over
// TLS the coordinator's own key, or any active ledger member (trainers
// upload their updates, the remote aggregator the global models, admins
// base models and job configs). A key the ledger does not know is
// refused, so a stranger who reaches the port cannot fill the disk.
func (s *Service) mayUpload(ctx context.Context) error {
	if s.cfg.Insecure {
		return nil
	}
	peer, err := tlsid.PeerID(ctx)
	if err != nil {
		return status.Errorf(codes.Unauthenticated, "upload: no TLS peer identity: %v", err)
	}
	if peer == s.id {
		return nil
	}
	m, err := QueryMember(ctx, s.cfg.Ledger, peer)
	switch {
	case errors.Is(err, ErrLedgerRecordNotFound) || (err == nil && !m.Active):
		return status.Errorf(codes.PermissionDenied, "upload: %s is not an active ledger member; only members may store artifacts here", abbrev(peer))
	case err != nil:
		return status.Errorf(codes.Unavailable, "upload: cannot read the caller's membership: %v", err)
	}
	return nil
}
