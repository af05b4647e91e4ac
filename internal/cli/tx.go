package cli

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/internal/strictjson"
	"github.com/fedtune/fedtune/ledger"
)

func init() { register(newTxCmd) }

// txBodies maps each transaction type name to a constructor of its body.
var txBodies = map[string]func() ledger.TxBody{
	ledger.TypeMemberAdded:       func() ledger.TxBody { return new(ledger.MemberAdded) },
	ledger.TypeMemberRemoved:     func() ledger.TxBody { return new(ledger.MemberRemoved) },
	ledger.TypeModelRegistered:   func() ledger.TxBody { return new(ledger.ModelRegistered) },
	ledger.TypeDatasetRegistered: func() ledger.TxBody { return new(ledger.DatasetRegistered) },
	ledger.TypeRoundOpened:       func() ledger.TxBody { return new(ledger.RoundOpened) },
	ledger.TypeUpdateSubmitted:   func() ledger.TxBody { return new(ledger.UpdateSubmitted) },
	ledger.TypeUpdateRejected:    func() ledger.TxBody { return new(ledger.UpdateRejected) },
	ledger.TypeRoundCommitted:    func() ledger.TxBody { return new(ledger.RoundCommitted) },
	ledger.TypeRoundFailed:       func() ledger.TxBody { return new(ledger.RoundFailed) },
	ledger.TypeJobRegistered:     func() ledger.TxBody { return new(ledger.JobRegistered) },
	ledger.TypeDatasetAttested:   func() ledger.TxBody { return new(ledger.DatasetAttested) },
	ledger.TypeRoundEvaluated:    func() ledger.TxBody { return new(ledger.RoundEvaluated) },
	ledger.TypeSubmissionsClosed: func() ledger.TxBody { return new(ledger.SubmissionsClosed) },
	ledger.TypeUpdateVerified:    func() ledger.TxBody { return new(ledger.UpdateVerified) },
	ledger.TypeJobCancelled:      func() ledger.TxBody { return new(ledger.JobCancelled) },
}

func txTypeNames() string {
	names := make([]string, 0, len(txBodies))
	for n := range txBodies {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// decodeTxBody decodes a JSON body of the named type strictly
// (internal/strictjson): unknown, duplicate or case-variant field names and
// trailing data are errors.
func decodeTxBody(typ string, data []byte) (ledger.TxBody, error) {
	mk, ok := txBodies[typ]
	if !ok {
		return nil, fmt.Errorf("unknown tx type %q (want one of %s)", typ, txTypeNames())
	}
	body := mk()
	if err := strictjson.Unmarshal(data, body); err != nil {
		return nil, fmt.Errorf("%s body: %w", typ, err)
	}
	// Dereference so the body is the value type SignTx expects.
	switch b := body.(type) {
	case *ledger.MemberAdded:
		return *b, nil
	case *ledger.MemberRemoved:
		return *b, nil
	case *ledger.ModelRegistered:
		return *b, nil
	case *ledger.DatasetRegistered:
		return *b, nil
	case *ledger.RoundOpened:
		return *b, nil
	case *ledger.UpdateSubmitted:
		return *b, nil
	case *ledger.UpdateRejected:
		return *b, nil
	case *ledger.RoundCommitted:
		return *b, nil
	case *ledger.RoundFailed:
		return *b, nil
	case *ledger.JobRegistered:
		return *b, nil
	case *ledger.RoundEvaluated:
		return *b, nil
	case *ledger.DatasetAttested:
		return *b, nil
	case *ledger.JobCancelled:
		return *b, nil
	}
	return body, nil
}

func newTxCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tx",
		Short: "Sign and submit any ledger transaction from its JSON body",
	}
	cmd.AddCommand(newTxSubmitCmd())
	return cmd
}

func newTxSubmitCmd() *cobra.Command {
	var addr, genesisPath, keyFile, body string
	cmd := &cobra.Command{
		Use:   "submit TYPE --body JSON|@FILE --key KEY",
		Short: "Sign a transaction of TYPE with KEY (next nonce, the node's chain ID) and wait for its fate",
		Long: "Sign a transaction of TYPE with KEY (next nonce, the node's chain ID) and wait for its fate.\n" +
			"TYPE is one of: " + txTypeNames() + ".\nThe body's fields are the JSON names in package ledger (e.g. RoundOpened: job_id, round, ...).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" || body == "" {
				return errors.New("tx submit: --key and --body are required")
			}
			data := []byte(body)
			if name, ok := strings.CutPrefix(body, "@"); ok {
				var err error
				if data, err = os.ReadFile(name); err != nil {
					return fmt.Errorf("tx submit: %w", err)
				}
			}
			b, err := decodeTxBody(args[0], data)
			if err != nil {
				return fmt.Errorf("tx submit: %w", err)
			}
			if err := submitSigned(cmd, addr, genesisPath, keyFile, b); err != nil {
				return fmt.Errorf("tx submit: %w", err)
			}
			return nil
		},
	}
	addrFlag(cmd, &addr, &genesisPath)
	cmd.Flags().StringVar(&keyFile, "key", "", "the signer's private key")
	cmd.Flags().StringVar(&body, "body", "", "the tx body as JSON, or @FILE to read it from a file")
	return cmd
}
