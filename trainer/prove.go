package trainer

import (
	"context"
	"fmt"
	"sync"
	"time"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/datasets"
)

// proofTree builds the Merkle tree of the local dataset once and keeps it,
// so that each proof costs a search and an audit path.
type proofTree struct {
	once sync.Once
	tree *datasets.Tree
}

func (p *proofTree) get(d *datasets.Dataset) *datasets.Tree {
	p.once.Do(func() {
		hs, _ := datasets.SampleHashes(d)
		p.tree = datasets.NewTree(hs)
	})
	return p.tree
}

// Prove returns the proof JSON (as `fedtune dataset prove` prints it) that
// the sample with hash leaf is, or is not, in the dataset with manifest
// digest dataset. It fails for a dataset this trainer does not hold.
func (n *Node) Prove(dataset string, leaf []byte) ([]byte, error) {
	if n.manifest == nil {
		return nil, fmt.Errorf("this trainer holds no data of its own")
	}
	if dataset != n.manifest.Digest {
		return nil, fmt.Errorf("this trainer does not hold dataset %s (it holds %s)", dataset, n.manifest.Digest)
	}
	if len(leaf) != 32 {
		return nil, fmt.Errorf("leaf hash has %d bytes, want 32", len(leaf))
	}
	t := n.tree.get(n.data.Dataset)
	if got := t.Root(); got != n.manifest.RootBytes() {
		return nil, fmt.Errorf("the local data no longer gives the registered root %s", n.manifest.Root)
	}
	p, err := t.Prove([32]byte(leaf))
	if err != nil {
		return nil, err
	}
	return p.Encode(), nil
}

// Bounds of a session's proof answers.
const (
	// maxProofWorkers bounds the proofs computed at once per session;
	// a question beyond it is refused at once (the coordinator bounds the
	// questions outstanding to one trainer too).
	maxProofWorkers = 4
	// submitProofTimeout bounds the SubmitProof call of one answer.
	submitProofTimeout = 30 * time.Second
	// refuseProofTimeout bounds the SubmitProof call of a refusal made on
	// the task stream's goroutine.
	refuseProofTimeout = 5 * time.Second
)

// answerProof answers one proof question of the coordinator.
func (n *Node) answerProof(ctx context.Context, cc coordinatorv1.CoordinatorClient, sess string, q *coordinatorv1.ProveTask) {
	req := &coordinatorv1.SubmitProofRequest{Session: sess, RequestId: q.RequestId}
	proof, err := n.Prove(q.Dataset, q.LeafHash)
	if err != nil {
		req.Error = err.Error()
	} else {
		req.Proof = proof
	}
	n.submitProof(ctx, cc, req, q.Dataset, submitProofTimeout)
}

// refuseProof answers one proof question with a refusal.
func (n *Node) refuseProof(ctx context.Context, cc coordinatorv1.CoordinatorClient, sess string, q *coordinatorv1.ProveTask, why string) {
	n.submitProof(ctx, cc, &coordinatorv1.SubmitProofRequest{Session: sess, RequestId: q.RequestId, Error: why}, q.Dataset, refuseProofTimeout)
}

func (n *Node) submitProof(ctx context.Context, cc coordinatorv1.CoordinatorClient, req *coordinatorv1.SubmitProofRequest, dataset string, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := cc.SubmitProof(ctx, req); err != nil {
		n.log.WarnContext(ctx, "coordinator refused the proof", "dataset", dataset, "err", err)
		return
	}
	n.log.InfoContext(ctx, "proof answered", "dataset", dataset, "error", req.Error)
}
