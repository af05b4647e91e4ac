package trainer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/commitment"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/gorgoniaref"
)

// Trained is what one training run leaves.
type Trained struct {
	// Model holds the trained weights in full fine-tuning (nil with LoRA).
	Model *model.Model
	// Adapter holds the trained adapter with LoRA (nil otherwise).
	Adapter *model.Adapter
	// Loss is the mean loss of the last step.
	Loss          float64
	Steps, Tokens int
}

// Train trains m under tc on the named device (one of Devices; "" is
// DeviceCPU), continuing adapter ad with LoRA (nil: a fresh one), for
// tc.Steps steps of batches from src. It is what `fedtune train` and the
// devnet's pre-training run; a trainer node's Backend runs the same for a
// round's task.
func Train(ctx context.Context, device string, m *model.Model, ad *model.Adapter, tc model.TrainConfig, src model.BatchSource) (Trained, error) {
	if err := ValidateDevice(device); err != nil {
		return Trained{}, fmt.Errorf("%w: device: %w", ErrConfig, err)
	}
	device = cmp.Or(device, DeviceCPU)
	start := startGorgonia
	if device != DeviceGorgonia {
		start = startEngine(engineDevices[device])
	}
	return run(ctx, device, start, m, ad, tc, src, nil, nil, nil)
}

// TrainBatches is Train on Batches with loss weights, document segments and
// positions (packed instruction data, NewInstructBatches). Only the engine
// devices take them.
func TrainBatches(ctx context.Context, device string, m *model.Model, ad *model.Adapter, tc model.TrainConfig, src model.BatchesSource) (Trained, error) {
	if err := ValidateDevice(device); err != nil {
		return Trained{}, fmt.Errorf("%w: device: %w", ErrConfig, err)
	}
	device = cmp.Or(device, DeviceCPU)
	if device == DeviceGorgonia {
		return Trained{}, errNoMasks(device)
	}
	return run(ctx, device, startEngine(engineDevices[device]), m, ad, tc, nil, src, nil, nil)
}

// session is one training run: model/engine's Trainer on a device, or
// model/gorgoniaref's. Adapter and Model return nil when the weights cannot
// be read back; Close then says why.
type session interface {
	Run(ctx context.Context, src model.BatchSource) (float64, error)
	Adapter() *model.Adapter
	Model() *model.Model
	StepCount() int
	Tokens() int
	Close() error
}

// starter begins a session. An error it returns about the task (not the
// device) wraps ErrTask.
type starter func(m *model.Model, ad *model.Adapter, tc model.TrainConfig) (session, error)

func startGorgonia(m *model.Model, ad *model.Adapter, tc model.TrainConfig) (session, error) {
	// The Gorgonia graph reads float32 only (a model.LoadBF16 base widened).
	tr, err := gorgoniaref.NewTrainerWithAdapter(m.Widened(), ad, tc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTask, err)
	}
	return tr, nil
}

// startEngine returns a starter that opens a device with open and runs
// model/engine's Trainer on it; closing the session closes both.
func startEngine(open DeviceOpener) starter {
	return func(m *model.Model, ad *model.Adapter, tc model.TrainConfig) (session, error) {
		dev, err := open()
		if err != nil {
			return nil, err
		}
		tr, err := engine.NewTrainer(dev, m, ad, tc)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("%w: %w", ErrTask, err), dev.Close())
		}
		return engineSession{tr}, nil
	}
}

// engineSession closes the device after the trainer.
type engineSession struct{ *engine.Trainer }

func (s engineSession) Close() error { return errors.Join(s.Trainer.Close(), s.Device().Close()) }

// optStater is a session that can hand over its AdamW state (the
// engine's Trainer).
type optStater interface {
	OptState() (*engine.OptState, error)
	SetOptState(*engine.OptState) error
}

// optIO carries a run's inner optimizer state: In (nil: fresh moments)
// is loaded before the first step; Out receives the state after the last
// (left nil by a session that cannot hand it over); Note says why In was
// not used.
type optIO struct {
	In   *engine.OptState
	Out  *engine.OptState
	Note string
}

// run trains one session to the end on batches from src, or from bsrc
// when it is not nil, and reads the trained weights back; with opt, it
// starts from opt.In's AdamW state and leaves its own in opt.Out. With rec
// set, every step goes through rec, which records the trainable state
// after it.
func run(ctx context.Context, device string, start starter, m *model.Model, ad *model.Adapter, tc model.TrainConfig, src model.BatchSource, bsrc model.BatchesSource, opt *optIO, rec *commitment.Recorder) (Trained, error) {
	return runTraced(ctx, device, start, m, ad, tc, src, bsrc, opt, rec, nil)
}

// stepTrace asks a run to trace the operations of step At (model/engine's
// Trainer.SetTrace) into Fn and to stop after it.
type stepTrace struct {
	At int
	Fn engine.Trace
}

// tracer is a model.BatchStepper that turns the engine's trace on for one
// step of the session it wraps.
type tracer struct {
	s  model.Stepper
	tr *stepTrace
}

func (x tracer) around(step func() (float64, error)) (float64, error) {
	ts := x.s.(interface{ SetTrace(engine.Trace) })
	if x.s.StepCount()+1 == x.tr.At {
		ts.SetTrace(x.tr.Fn)
		defer ts.SetTrace(nil)
	}
	return step()
}

func (x tracer) Step(b [][]int) (float64, error) {
	return x.around(func() (float64, error) { return x.s.Step(b) })
}

func (x tracer) StepBatch(b model.Batch) (float64, error) {
	return x.around(func() (float64, error) { return x.s.(model.BatchStepper).StepBatch(b) })
}

func (x tracer) StepCount() int { return x.s.StepCount() }

// runTraced is run, tracing step trace.At (nil: none) and stopping after
// it; it then needs rec and an engine session.
func runTraced(ctx context.Context, device string, start starter, m *model.Model, ad *model.Adapter, tc model.TrainConfig, src model.BatchSource, bsrc model.BatchesSource, opt *optIO, rec *commitment.Recorder, trace *stepTrace) (Trained, error) {
	s, err := start(m, ad, tc)
	if err != nil {
		if errors.Is(err, ErrTask) {
			return Trained{}, err
		}
		return Trained{}, fmt.Errorf("trainer: device %s: %w", device, err)
	}
	ost, canOpt := s.(optStater)
	if opt != nil && opt.In != nil {
		switch {
		case !canOpt:
			opt.In, opt.Note = nil, "device "+device+" keeps no optimizer state: fresh moments"
		default:
			if serr := ost.SetOptState(opt.In); serr != nil {
				opt.In, opt.Note = nil, fmt.Sprintf("saved state not used (%v): fresh moments", serr)
			}
		}
	}
	var stepper model.Stepper
	steps := tc.Steps
	if st, ok := s.(model.Stepper); ok && rec != nil {
		rec.Stepper, rec.State = st, sessionState(s, tc.LoRA != nil)
		stepper = rec
		if _, canTrace := s.(interface{ SetTrace(engine.Trace) }); trace != nil && canTrace {
			rec.Stepper, steps = tracer{s: st, tr: trace}, min(trace.At, tc.Steps)
		} else if trace != nil {
			err = fmt.Errorf("%w: device %s cannot trace its steps", ErrTask, device)
		}
	} else if rec != nil {
		err = fmt.Errorf("%w: device %s cannot record its steps", ErrTask, device)
	}
	var loss float64
	switch {
	case err != nil:
	case bsrc != nil:
		bs, ok := s.(model.BatchStepper)
		if stepper != nil {
			bs = rec
		}
		if ok {
			loss, err = model.RunBatchSteps(ctx, bs, steps, bsrc)
		} else {
			err = errNoMasks(device)
		}
	case stepper != nil:
		loss, err = model.RunSteps(ctx, stepper, steps, src)
	default:
		loss, err = s.Run(ctx, src)
	}
	out := Trained{Loss: loss}
	if err == nil {
		if tc.LoRA != nil {
			out.Adapter = s.Adapter()
		} else {
			out.Model = s.Model()
		}
		if opt != nil && canOpt {
			opt.Out, err = ost.OptState()
		}
	}
	out.Steps, out.Tokens = s.StepCount(), s.Tokens()
	cerr := s.Close()
	switch {
	case err != nil:
		return Trained{}, err
	case cerr != nil:
		return Trained{}, fmt.Errorf("trainer: device %s: %w", device, cerr)
	case out.Adapter == nil && out.Model == nil:
		return Trained{}, fmt.Errorf("trainer: device %s: reading the trained weights back failed", device)
	}
	return out, nil
}

// fit trains task t on local data d in one session and writes its update.
func fit(ctx context.Context, device string, start starter, progress func(step int, loss float64), t Task, d Data) (Update, error) {
	m, f, err := loadTask(t, d)
	if err != nil {
		return Update{}, err
	}
	tc := t.Train
	if progress != nil {
		tc.Progress = func(step int, loss, _ float64) { progress(step, loss) }
	}
	src, bsrc := f.source(tc)
	var opt *optIO
	switch {
	case t.startOpt != nil:
		opt = &optIO{In: t.startOpt}
	case t.OptState != "":
		opt = &optIO{}
		if _, serr := os.Stat(t.OptState); serr == nil {
			in, _, lerr := LoadOptState(t.OptState, t.JobID)
			if lerr != nil {
				opt.Note = fmt.Sprintf("saved state not used (%v): fresh moments", lerr)
			}
			opt.In = in
		}
	}
	in, err := TaskInputs(m, t, nil) // before training, which may touch m
	if err != nil {
		return Update{}, err
	}
	startDigest, startPath, err := keepStartOptState(t, opt)
	if err != nil {
		return Update{}, err
	}
	rec := &commitment.Recorder{Store: t.Checkpoints, Job: t.JobID, Round: t.Round, Last: tc.Steps}
	tr, err := run(ctx, device, start, m, t.Adapter, tc, src, bsrc, opt, rec)
	if err != nil {
		return Update{}, err
	}
	if opt != nil && opt.In != nil {
		// The inputs name the optimizer state the steps started from.
		in.OptState = startDigest
	} else if startPath != "" {
		// The session did not take it: the round started fresh.
		_ = removeIfExists(startPath)
	}
	in.Batches = f.steps()
	c, err := commit(in, rec)
	if err != nil {
		return Update{}, err
	}
	if t.Checkpoints != nil {
		if err := t.Checkpoints.SaveDigests(t.JobID, t.Round, rec.Digests()); err != nil {
			return Update{}, fmt.Errorf("trainer: step digests: %w", err)
		}
		if err := t.Checkpoints.SaveInputs(t.JobID, t.Round, in); err != nil {
			return Update{}, fmt.Errorf("trainer: training inputs: %w", err)
		}
	}
	var ts map[string]*model.Tensor
	name := UpdateFullFile
	if tr.Adapter != nil {
		ts, name = tr.Adapter.Tensors, UpdateLoRAFile
	} else {
		ts = tr.Model.Tensors
	}
	path := filepath.Join(t.OutDir, name)
	digest, err := writeTaskUpdate(t, path, ts)
	if err != nil {
		return Update{}, err
	}
	u := Update{Path: path, Digest: digest, Loss: tr.Loss, Steps: tr.Steps, Tokens: tr.Tokens, Commitment: c, stepDigests: rec.Digests(), inputs: in}
	if opt != nil {
		if opt.In != nil {
			u.OptSteps = opt.In.Steps
		}
		u.OptNote = opt.Note
		if opt.Out != nil && t.OptState != "" {
			if err := SaveOptState(t.OptState, t.JobID, t.Round, opt.Out); err != nil {
				u.OptNote = strings.TrimPrefix(u.OptNote+"; "+err.Error()+": the next round starts fresh", "; ")
				// A stale state must not survive a failed save.
				_ = removeIfExists(t.OptState)
			}
		}
	}
	return u, nil
}

// keepStartOptState returns the digest of the inner optimizer state the
// run is to start from (opt.In) and, with step checkpoints, keeps a copy
// of it beside them (commitment.Store.StartOptStatePath, written
// atomically, pruned with the round) so that an auditor can replay the
// round; it returns that file's path. Fresh moments: "", "".
func keepStartOptState(t Task, opt *optIO) (digest, path string, err error) {
	if opt == nil || opt.In == nil {
		return "", "", nil
	}
	if digest, err = OptStateDigest(opt.In); err != nil {
		return "", "", err
	}
	if t.Checkpoints == nil {
		return digest, "", nil
	}
	if path, err = t.Checkpoints.StartOptStatePath(t.JobID, t.Round); err != nil {
		return "", "", fmt.Errorf("trainer: starting optimizer state: %w", err)
	}
	if err := SaveOptState(path, t.JobID, t.Round, opt.In); err != nil {
		return "", "", fmt.Errorf("trainer: starting optimizer state: %w", err)
	}
	if err := t.Checkpoints.Prune(t.JobID); err != nil {
		return "", "", fmt.Errorf("trainer: starting optimizer state: %w", err)
	}
	return digest, path, nil
}

// removeIfExists removes path; a missing file is not an error.
func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
