package ledger

import "strings"

// TruncateReason cuts a rejection or failure reason to MaxReasonLen bytes
// (ending in "...") and replaces invalid UTF-8, so that a tx carrying it
// passes the reason check.
func TruncateReason(s string) string {
	if len(s) > MaxReasonLen {
		s = s[:MaxReasonLen-3] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
