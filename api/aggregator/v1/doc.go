// Package aggregatorv1 is the generated Go code of the
// fedtune.aggregator.v1 gRPC API (aggregator.proto): the Aggregator service
// a standalone aggregator process serves to the coordinator. Regenerate it
// with "make proto"; do not edit the *.pb.go files by hand. Package
// aggregator/node implements the service; package coordinator calls it.
package aggregatorv1
