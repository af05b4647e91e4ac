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
//	DIR/uploads/<digest>   the store's own partial fetches (Partial), kept so they
//	                       can resume
//	DIR/uploads/<owner>/<digest>
//	                       an uploader's partial uploads (ResumePartialAs): each
//	                       uploader resumes only its own bytes; PruneUploads drops
//	                       abandoned ones of every owner
//	DIR/owners/<owner>/<digest>
//	                       empty records of the blobs an uploader published, which
//	                       Usage counts against its quota
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
// offset, and Stat. Its ServerConfig bounds what it accepts: a maximum
// blob size (refused from the header, before any byte), a quota per
// uploader (bytes stored and in partial uploads) and bytes in flight per
// uploader, an idle timeout that closes upload and download streams on
// which nothing moves; AuthorizeUpload and AuthorizeDownload let the node
// decide who may store and who may read which blob (and so who may learn
// from Upload or Status that a blob is stored); Maintain prunes
// abandoned partial uploads. Refusals carry gRPC codes (PermissionDenied,
// ResourceExhausted, InvalidArgument, DeadlineExceeded for idle streams)
// and are counted by reason in fedtune_artifact_rejected_total.
//
// Client wraps the API: Upload resumes on its own, Download verifies the
// digest as it streams, Fetch pulls a blob into a local Store and resumes
// an earlier partial fetch; after a digest mismatch Upload and Fetch start
// once more from zero.
//
// Transport security comes from package internal/tlsid: TLS 1.3 with
// certificates made from the nodes' ledger keys, peers accepted by key ID.
package artifact
