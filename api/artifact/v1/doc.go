// Package artifactv1 is the generated Go code of the fedtune.artifact.v1
// gRPC API (artifact.proto): the Artifacts service that moves
// content-addressed blobs in chunks, with resumable uploads and downloads.
// Regenerate it with "make proto"; do not edit the *.pb.go files by hand.
// Package artifact implements the service (Server) and wraps it (Client).
package artifactv1
