// Package coordinatorv1 is the generated Go code of the
// fedtune.coordinator.v1 gRPC API (coordinator.proto): the Coordinator
// service through which trainers join and receive tasks and operators
// launch and cancel jobs. Regenerate it with "make proto"; do not edit the *.pb.go
// files by hand. Package coordinator implements the service.
package coordinatorv1
