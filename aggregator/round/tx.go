package round

import (
	"fmt"

	"github.com/fedtune/fedtune/internal/strictjson"
	"github.com/fedtune/fedtune/ledger"
)

// DecodeTx decodes the JSON body of an aggregator-role transaction of the
// given type (UpdateRejected, RoundCommitted, RoundFailed); other types
// are refused.
func DecodeTx(typ string, body []byte) (ledger.TxBody, error) {
	var b ledger.TxBody
	var err error
	switch typ {
	case ledger.TypeUpdateRejected:
		var v ledger.UpdateRejected
		err = strictjson.Unmarshal(body, &v)
		b = v
	case ledger.TypeRoundCommitted:
		var v ledger.RoundCommitted
		err = strictjson.Unmarshal(body, &v)
		b = v
	case ledger.TypeRoundFailed:
		var v ledger.RoundFailed
		err = strictjson.Unmarshal(body, &v)
		b = v
	default:
		return nil, fmt.Errorf("transaction type %q is not signed by the aggregator", typ)
	}
	if err != nil {
		return nil, fmt.Errorf("%s body: %w", typ, err)
	}
	return b, nil
}
