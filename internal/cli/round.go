package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

func init() { register(newRoundCmd) }

const defaultCoordinatorAddr = "127.0.0.1:7400"

// coordinatorFlags are how a command reaches the coordinator.
type coordinatorFlags struct {
	addr, key, id string
	insecure      bool
}

func (c *coordinatorFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.addr, "coordinator", defaultCoordinatorAddr, "coordinator gRPC address")
	f.StringVar(&c.key, "key", "", "your ledger key (TLS client identity; an admin or coordinator key to launch)")
	f.StringVar(&c.id, "coordinator-id", "", "coordinator key ID its TLS certificate must prove")
	f.BoolVar(&c.insecure, "insecure", false, "plain-text gRPC (no TLS)")
}

func (c *coordinatorFlags) dial() (coordinatorv1.CoordinatorClient, func(), error) {
	var opt grpc.DialOption
	if c.insecure {
		opt = tlsid.InsecureDialOption()
	} else {
		if c.key == "" || c.id == "" {
			return nil, nil, errors.New("--key and --coordinator-id are required over TLS (or --insecure)")
		}
		k, err := ledger.LoadKey(c.key)
		if err != nil {
			return nil, nil, err
		}
		if opt, err = tlsid.DialOption(k, tlsid.ExpectID(c.id)); err != nil {
			return nil, nil, err
		}
	}
	conn, err := grpc.NewClient(c.addr, opt)
	if err != nil {
		return nil, nil, err
	}
	return coordinatorv1.NewCoordinatorClient(conn), func() { conn.Close() }, nil
}

// dialArtifacts connects to the artifact store at addr (default: the
// coordinator's address) whose key is id (default: the coordinator's), as
// the key and transport c names.
func (c *coordinatorFlags) dialArtifacts(addr, id string) (*artifact.Client, error) {
	addr, id = cmp.Or(addr, c.addr), cmp.Or(id, c.id)
	if c.insecure {
		return artifact.Dial(addr, tlsid.InsecureDialOption())
	}
	if c.key == "" || id == "" {
		return nil, errors.New("--key and --artifacts-id (or --coordinator-id) are required over TLS (or --insecure)")
	}
	k, err := ledger.LoadKey(c.key)
	if err != nil {
		return nil, err
	}
	opt, err := tlsid.DialOption(k, tlsid.ExpectID(id))
	if err != nil {
		return nil, err
	}
	return artifact.Dial(addr, opt)
}

func newRoundCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "round",
		Short: "Launch a job's rounds on the coordinator and follow them",
	}
	cmd.AddCommand(newRoundLaunchCmd(), newRoundStatusCmd(), newRoundCancelCmd())
	return cmd
}

func newRoundLaunchCmd() *cobra.Command {
	var cf coordinatorFlags
	var file string
	cmd := &cobra.Command{
		Use:   "launch -f JOB.yaml",
		Short: "Start a job from its YAML file on the coordinator",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("round launch: -f JOB.yaml is required")
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("round launch: %w", err)
			}
			abs, err := filepath.Abs(file)
			if err != nil {
				return err
			}
			c, closeFn, err := cf.dial()
			if err != nil {
				return fmt.Errorf("round launch: %w", err)
			}
			defer closeFn()
			resp, err := c.LaunchJob(cmd.Context(), &coordinatorv1.LaunchJobRequest{JobYaml: data, Source: abs})
			if err != nil {
				return fmt.Errorf("round launch: %w", coordinator.LaunchRefusal(file, err))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "job %s launched: config %s, base model %s\n", resp.JobId, resp.ConfigDigest, resp.BaseModel)
			fmt.Fprintf(cmd.ErrOrStderr(), "follow it: fedtune round status %s (with the same --coordinator, --coordinator-id and --key)\n", resp.JobId)
			fmt.Fprintf(cmd.ErrOrStderr(), "stop it: fedtune round cancel %s --reason TEXT (the same flags; the coordinator runs one job at a time)\n", resp.JobId)
			return nil
		},
	}
	cf.add(cmd)
	cmd.Flags().StringVarP(&file, "file", "f", "", "job YAML file")
	return cmd
}

func newRoundCancelCmd() *cobra.Command {
	var cf coordinatorFlags
	var reason string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "cancel JOB",
		Short: "Stop a running or waiting job: its open round fails on the ledger with the reason, and the coordinator takes the next launch",
		Long: `Cancel stops the job the coordinator runs. The coordinator records a
JobCancelled on the ledger, which fails the job's open round with the
reason (a spot-check draw already made stands), tells the round's trainers
it ended, and is then free to launch the next job. A cancelled job does not
run again: launch it under a new name.

Over TLS only the key that launched the job or an active admin member may
cancel it (--key); with --insecure, anyone who reaches the coordinator.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeFn, err := cf.dial()
			if err != nil {
				return fmt.Errorf("round cancel: %w", err)
			}
			defer closeFn()
			ctx, cancel := context.WithTimeout(cmd.Context(), wait)
			defer cancel()
			resp, err := c.CancelJob(ctx, &coordinatorv1.CancelJobRequest{JobId: args[0], Reason: reason})
			if err != nil && ctx.Err() != nil && cmd.Context().Err() == nil {
				return fmt.Errorf("round cancel: the ledger did not record the cancellation of job %s within --wait %s; it may still land: see fedtune round status %s: %w",
					args[0], wait, args[0], err)
			}
			if err != nil {
				return fmt.Errorf("round cancel: %w", err)
			}
			what := "no round was open"
			if resp.Round > 0 {
				what = fmt.Sprintf("round %d failed", resp.Round)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "job %s cancelled at height %d: %s\n", resp.JobId, resp.Height, what)
			fmt.Fprintln(cmd.ErrOrStderr(), "the coordinator is free: launch the next job with fedtune round launch -f JOB.yaml")
			return nil
		},
	}
	cf.add(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded on the ledger (the failed round's reason)")
	cmd.Flags().DurationVar(&wait, "wait", time.Minute, "how long to wait for the ledger to record the cancellation")
	return cmd
}

func newRoundStatusCmd() *cobra.Command {
	var cf coordinatorFlags
	cmd := &cobra.Command{
		Use:   "status [JOB]",
		Short: "Show a job's rounds: who trained, their loss, the committed digests",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeFn, err := cf.dial()
			if err != nil {
				return fmt.Errorf("round status: %w", err)
			}
			defer closeFn()
			req := &coordinatorv1.StatusRequest{}
			if len(args) == 1 {
				req.JobId = args[0]
			}
			st, err := c.Status(cmd.Context(), req)
			if err != nil {
				return fmt.Errorf("round status: %w", err)
			}
			PrintJobStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	cf.add(cmd)
	return cmd
}

// PrintJobStatus writes a job's status as a table: one line per round, one
// with its evaluation (mean NLL and perplexity on the job's eval data) when
// the coordinator evaluated its model, and one per trainer update.
func PrintJobStatus(w io.Writer, st *coordinatorv1.StatusResponse) {
	if st.JobId == "" {
		fmt.Fprintf(w, "no job launched yet; %d trainers joined: %s\n", len(st.Joined), shortList(st.Joined))
		return
	}
	if st.RoundsTotal > 0 {
		fmt.Fprintf(w, "job %s: %s, %d of %d rounds recorded", st.JobId, st.State, len(st.Rounds), st.RoundsTotal)
	} else {
		// A job the coordinator has not loaded: the ledger records its
		// rounds, not how many the job asked for.
		noun := "rounds"
		if len(st.Rounds) == 1 {
			noun = "round"
		}
		fmt.Fprintf(w, "job %s: %s, %d %s recorded", st.JobId, st.State, len(st.Rounds), noun)
	}
	if st.Detail != "" {
		fmt.Fprintf(w, " (%s)", st.Detail)
	}
	fmt.Fprintln(w)
	if len(st.Joined) > 0 {
		fmt.Fprintf(w, "trainers joined: %s\n", shortList(st.Joined))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUND\tSTATUS\tTRAINER\tLOSS\tSAMPLES\tWEIGHT\tDIGEST")
	for _, r := range st.Rounds {
		d := r.ModelDigest
		if r.Status == string(ledger.StatusFailed) {
			d = r.FailReason
		}
		fmt.Fprintf(tw, "%d\t%s\t%d selected\t\t\t\t%s\n", r.Round, r.Status, len(r.Selected), d)
		if r.Evaluated {
			fmt.Fprintf(tw, "\t\teval NLL\t%.4f\t\tperplexity %.2f\t\n", r.EvalNll, r.EvalPerplexity)
		}
		for _, u := range r.Updates {
			loss := "-"
			if l, ok := u.Metrics["loss"]; ok {
				loss = fmt.Sprintf("%.4f", l)
			}
			weight := fmt.Sprintf("%.4f", u.Weight)
			if u.Rejected {
				weight = "rejected"
			}
			fmt.Fprintf(tw, "\t\t%s\t%s\t%d\t%s\t%s\n", short(u.Trainer), loss, u.Samples, weight, u.UpdateDigest)
		}
	}
	tw.Flush()
	if st.Model != "" {
		fmt.Fprintf(w, "latest model: %s\n", st.Model)
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func shortList(ids []string) string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = short(id)
	}
	return strings.Join(out, " ")
}
