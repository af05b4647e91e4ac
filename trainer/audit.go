package trainer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model/commitment"
)

// Claim is what a trainer's UpdateSubmitted says about one round.
type Claim struct {
	Job          string
	Round        uint64
	UpdateDigest string
	Commitment   ledger.TrainingCommitment
}

// Verdict is the result of replaying a trainer's local training.
type Verdict struct {
	// Replayed are the replay's own commitment and update digest.
	Replayed     ledger.TrainingCommitment
	UpdateDigest string
	// InputsMatch, StepsMatch, StepRootMatch and UpdateMatch compare the
	// replay with the claim, field by field.
	InputsMatch, StepsMatch, StepRootMatch, UpdateMatch bool
	// FirstBadStep is the first step whose committed state differs from
	// the replay's, when the evidence pins it (0 otherwise). When it
	// does not, the first differing step lies in (After, Before].
	FirstBadStep  int
	After, Before int
	// DigestsProved reports that the trainer's disclosed step digests
	// (commitment.DigestsFile) give its committed step root: every step's
	// committed digest is then known, and the first differing step is
	// pinned from them even where checkpoints were not kept.
	DigestsProved bool
	// Lies are the trainer's checkpoints that do not prove against its
	// committed step root.
	Lies []commitment.Checkpoint
	// OptStateLie says why the starting optimizer state the trainer kept
	// for the round (commitment.Store.StartOptStatePath) is not the one
	// its committed inputs name, or cannot be used (nil: none is wrong).
	OptStateLie error
	// NeedsOptState reports that the round may have started from the
	// trainer's kept inner optimizer state (pre-training, round 2 on) and
	// none was given: the replay from fresh moments cannot judge it.
	NeedsOptState bool
	// Op names the first operation within FirstBadStep whose result
	// differs (nil when no step is pinned): see OpFinding.
	Op *OpFinding
	// InputsDiff says which of the trainer's disclosed inputs
	// (commitment.InputsFile, proved against its committed inputs digest)
	// differ from the replay's, when the inputs digests differ.
	InputsDiff []string
	// InputsLie says why the trainer's disclosed inputs cannot be used:
	// malformed, or not the committed inputs (nil: none disclosed, or
	// they prove).
	InputsLie error
	// Reason says, in words, what differs ("" when the replay matches).
	Reason string
}

// Honest reports whether the replay matches the claim bit for bit.
func (v *Verdict) Honest() bool {
	return v.InputsMatch && v.StepsMatch && v.StepRootMatch && v.UpdateMatch && v.OptStateLie == nil
}

// Replay re-runs task t on data d on the Host engine (bit-exact on every
// CPU), recording every step, and compares the result with claim. When the
// step roots differ it names the first differing step from the step
// digests the commitment discloses (ledger.TrainingCommitment.StepDigests,
// checked against its root; a round's read leaves them out, so the caller
// reads them per update, ledger client StepDigests), or else locates it by bisecting the
// trainer's checkpoints in ckpt (nil: none), each proved against the
// committed root first: a checkpoint that does not prove is a lie, listed
// in Verdict.Lies and not used. t.OutDir receives the replayed update.
//
// A round may start from the inner optimizer state the trainer kept from
// its last one (pre-training); the replay then starts from the copy the
// trainer keeps in ckpt (commitment.Store.StartOptStatePath), whose
// digest the committed inputs name: a copy that cannot be used, or whose
// replay does not give the committed inputs, is named in
// Verdict.OptStateLie. Without a copy, a pre-training round 2 on whose
// inputs differ is not judged (Verdict.NeedsOptState).
func Replay(ctx context.Context, t Task, d Data, claim Claim, ckpt *commitment.Store) (Verdict, error) {
	t.Checkpoints, t.OptState, t.startOpt = nil, "", nil
	var startPath, startDigest string
	var startErr error
	if ckpt != nil {
		p, err := ckpt.StartOptStatePath(claim.Job, claim.Round)
		if err != nil {
			return Verdict{}, fmt.Errorf("replay: %w", err)
		}
		if _, serr := os.Stat(p); serr == nil {
			startPath = p
			st, _, lerr := LoadOptState(p, t.JobID)
			if lerr == nil {
				startDigest, lerr = OptStateDigest(st)
			}
			if startErr = lerr; lerr == nil {
				t.startOpt = st
			}
		}
	}
	u, err := fit(ctx, DeviceHost, startEngine(engineDevices[DeviceHost]), nil, t, d)
	if err != nil {
		return Verdict{}, fmt.Errorf("replay: %w", err)
	}
	if t.startOpt != nil && u.OptNote != "" {
		startErr = errors.New(u.OptNote)
	}
	c := claim.Commitment
	v := Verdict{Replayed: *u.Commitment, UpdateDigest: u.Digest}
	v.InputsMatch = v.Replayed.InputsDigest == c.InputsDigest
	v.StepsMatch = v.Replayed.Steps == c.Steps
	v.StepRootMatch = v.StepsMatch && v.Replayed.StepRoot == c.StepRoot
	v.UpdateMatch = u.Digest == claim.UpdateDigest
	switch {
	case startErr != nil:
		v.OptStateLie = fmt.Errorf("the starting optimizer state %s cannot be used: %w", startPath, startErr)
	case startPath != "" && !v.InputsMatch:
		v.OptStateLie = fmt.Errorf("the starting optimizer state %s (digest %s) does not give the committed inputs digest %s", startPath, startDigest, c.InputsDigest)
	}
	if v.Honest() {
		return v, nil
	}
	var why []string
	if v.OptStateLie != nil {
		why = append(why, fmt.Sprintf("%v (a lie)", v.OptStateLie))
	}
	if !v.InputsMatch && startPath == "" && t.Base != "" && claim.Round >= 2 {
		// The round may have started from kept moments that the
		// replay does not have: no step can be judged.
		v.NeedsOptState = true
		why = append(why, fmt.Sprintf("inputs digest %s, replay from fresh moments %s: round %d of pre-training job %q may have started "+
			"from the trainer's kept inner optimizer state, and the replay needs that starting optimizer state (%s in the round's "+
			"checkpoint folder, --checkpoints) to judge it", c.InputsDigest, v.Replayed.InputsDigest, claim.Round, claim.Job, commitment.StartOptStateFile))
		v.Reason = join(why)
		return v, nil
	}
	disclosed := disclosedInputs(&v, claim, ckpt)
	if !v.InputsMatch {
		if disclosed != nil {
			v.InputsDiff = disclosed.Differences(&u.inputs)
			why = append(why, fmt.Sprintf("inputs digest %s, replay %s: the trainer's disclosed inputs differ in %s", c.InputsDigest, v.Replayed.InputsDigest, strings.Join(v.InputsDiff, "; ")))
		} else {
			why = append(why, fmt.Sprintf("inputs digest %s, replay %s (other base, adapter, hyperparameters, seed, batches or starting optimizer state)", c.InputsDigest, v.Replayed.InputsDigest))
		}
	}
	if v.InputsLie != nil {
		why = append(why, fmt.Sprintf("%v (a lie)", v.InputsLie))
	}
	if v.InputsMatch && v.StepRootMatch && v.UpdateMatch {
		v.Reason = join(why)
		return v, nil
	}
	if !v.StepsMatch {
		why = append(why, fmt.Sprintf("commits %d steps, the task asks %d", c.Steps, v.Replayed.Steps))
	}
	if v.StepRootMatch {
		// Every step's state is the replay's: the update is not the
		// result of those steps.
		why = append(why, fmt.Sprintf("the steps match but the update %s is not the replay's %s", claim.UpdateDigest, u.Digest))
		v.Reason = join(why)
		return v, nil
	}
	locate(&v, u.stepDigests, claim, ckpt)
	if v.FirstBadStep > 0 {
		why = append(why, fmt.Sprintf("step %d is the first whose state differs from the replay's", v.FirstBadStep))
		if err := locateOp(ctx, t, d, &v, claim, ckpt, disclosed, &u.inputs, u.stepDigests); err != nil {
			return Verdict{}, fmt.Errorf("replay: %w", err)
		}
		why = append(why, v.Op.Text)
	} else {
		why = append(why, fmt.Sprintf("the first differing step is in %d..%d (no proved checkpoint pins it)", v.After+1, v.Before))
	}
	if len(v.Lies) > 0 {
		why = append(why, fmt.Sprintf("%d checkpoints do not prove against the step root (lies), first step %d: %v", len(v.Lies), v.Lies[0].Step, v.Lies[0].Err))
	}
	if !v.UpdateMatch {
		why = append(why, fmt.Sprintf("update %s, replay %s", claim.UpdateDigest, u.Digest))
	}
	v.Reason = join(why)
	return v, nil
}

// disclosedInputs reads the trainer's disclosed inputs from ckpt and
// returns them when they prove against the committed inputs digest; a
// disclosure that is malformed or does not prove is recorded in
// v.InputsLie.
func disclosedInputs(v *Verdict, claim Claim, ckpt *commitment.Store) *commitment.Inputs {
	if ckpt == nil {
		return nil
	}
	in, err := ckpt.Inputs(claim.Job, claim.Round)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		v.InputsLie = fmt.Errorf("the disclosed training inputs cannot be read: %w", err)
		return nil
	}
	d, err := in.Digest()
	if err != nil || d != claim.Commitment.InputsDigest {
		v.InputsLie = fmt.Errorf("the disclosed training inputs (%s) hash to %s, not the committed inputs digest %s", commitment.InputsFile, d, claim.Commitment.InputsDigest)
		return nil
	}
	return &in
}

// locate bisects the proved checkpoints for the first step whose state
// differs from the replay's digests.
func locate(v *Verdict, replay []string, claim Claim, ckpt *commitment.Store) {
	c := claim.Commitment
	n := min(int(c.Steps), len(replay))
	// The state before step 1 is the inputs, which match or are reported.
	v.After, v.Before = 0, max(n, 1)
	if int(c.Steps) != len(replay) {
		// A shorter run: the first step it lacks differs at the latest;
		// a longer one: the first step beyond the task.
		v.Before = n + 1
	}
	if disclosedOK(c) {
		// The trainer disclosed every step's digest on the ledger (they
		// hash to its step root): the first that differs is named
		// without its checkpoints.
		i := 0
		for i < n && c.StepDigests[i] == replay[i] {
			i++
		}
		if i < n || int(c.Steps) != len(replay) {
			v.After, v.Before, v.FirstBadStep = i, i+1, i+1
			return
		}
	}
	var proved []commitment.Checkpoint
	if ckpt != nil {
		steps, _ := ckpt.Steps(claim.Job, claim.Round)
		disclosed, derr := ckpt.Digests(claim.Job, claim.Round)
		for _, s := range steps {
			if s > int(c.Steps) {
				continue
			}
			cp := commitment.Checkpoint{Step: s, Err: derr}
			if derr == nil {
				cp = ckpt.Prove(claim.Job, claim.Round, c.StepRoot, c.Steps, s, disclosed)
			}
			if cp.Err != nil {
				v.Lies = append(v.Lies, cp)
				continue
			}
			if s <= n {
				proved = append(proved, cp)
			}
		}
	}
	if ckpt != nil {
		disclosed, err := ckpt.Digests(claim.Job, claim.Round)
		if root, rerr := commitment.StepRoot(disclosed); err == nil && rerr == nil && uint64(len(disclosed)) == c.Steps && root == c.StepRoot {
			// The disclosed digests are the committed leaves: compare
			// every step's.
			v.DigestsProved = true
			i := 0
			for i < n && disclosed[i] == replay[i] {
				i++
			}
			v.After, v.Before, v.FirstBadStep = i, i+1, i+1
			return
		}
	}
	// Divergence is monotone (a state that differs makes every later one
	// differ), so bisect for the first proved checkpoint that differs.
	j := sort.Search(len(proved), func(i int) bool { return proved[i].Digest != replay[proved[i].Step-1] })
	if j > 0 {
		v.After = proved[j-1].Step
	}
	if j < len(proved) {
		v.Before = proved[j].Step
	}
	if v.Before == v.After+1 {
		v.FirstBadStep = v.Before
	}
}

// disclosedOK reports whether c discloses its step digests and they hash
// to its step root.
func disclosedOK(c ledger.TrainingCommitment) bool {
	if len(c.StepDigests) == 0 || uint64(len(c.StepDigests)) != c.Steps {
		return false
	}
	root, err := ledger.StepDigestsRoot(c.StepDigests)
	return err == nil && root == c.StepRoot
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += "; "
		}
		out += x
	}
	return out
}
