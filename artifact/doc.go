// Package artifact owns fedtune's data plane: a content-addressed blob store
// on the local file system and the gRPC service that moves blobs between
// nodes.
//
// # Store
//
// A Store keeps each blob in a file named by the lowercase hex SHA-256 of
// its contents (the same digest form the ledger records; for a canonical
// safetensors file it is the weight digest), sharded by the first two hex
// characters:
//
//	DIR/blobs/ab/abcdef…   complete, verified blobs (read-only files)
//	DIR/tmp/               Put's temporary files; removed when the store is opened
//	DIR/uploads/<digest>   partial uploads and fetches (Partial), kept so they can
//	                       resume; PruneUploads drops abandoned ones
//	DIR/LOCK               held (flock) by the one process that has the store open
//
// Every write goes to a temporary file in the store, is fsynced, renamed into
// place and its directory fsynced, so a crash never leaves a torn blob under
// its name. Writers of the same digest may race: both succeed and one file
// remains. A blob whose bytes do not hash to the digest it was announced
// under is refused and nothing is kept.
//
// # Service
//
// Server serves the fedtune.artifact.v1.Artifacts gRPC API over a Store:
// chunked uploads and downloads (no message carries more than ChunkSize
// bytes, so blobs of any size move in bounded memory), uploads that resume
// from the bytes the server already holds (Status), downloads from an
// offset, and Stat. Client wraps the API: Upload resumes on its own,
// Download verifies the digest as it streams, Fetch pulls a blob into a
// local Store and resumes an earlier partial fetch.
//
// Transport security comes from package internal/tlsid: TLS 1.3 with
// certificates made from the nodes' ledger keys, peers accepted by key ID.
package artifact
