// Package ledgerv1 is the generated Go code of the fedtune.ledger.v1 gRPC
// API (ledger.proto): the Ledger service that every ledger node serves and
// its messages. Regenerate it with "make proto"; do not edit the *.pb.go
// files by hand. The service is implemented by ledger/node; ledger/client
// wraps it with verification of block hashes, cosignatures and inclusion
// proofs.
package ledgerv1
