// Package tlsid secures fedtune's gRPC links with TLS tied to the ledger
// identities instead of a certificate authority.
//
// Every node makes a self-signed X.509 certificate from its ed25519 ledger
// key (Certificate): the key ID (dsse.KeyID, the hex SHA-256 of the raw
// public key) is its subject common name and a URI SAN "fedtune:id:<keyid>".
// Both ends of a connection present such a certificate over TLS 1.3 and
// check the other's by key ID: the ID is always derived from the public key
// the peer proved it holds in the handshake, never read from the name
// fields, and handed to a Verifier (for example a ledger membership check,
// or ExpectID for a client that knows whom it is dialling). A gRPC handler
// learns who called with PeerID.
//
// Plain-text gRPC is available only through the explicitly named
// InsecureServerOption and InsecureDialOption (commands expose them as
// --insecure). ServerOptions picks between the two for a server, and
// Serve runs a gRPC server on a listener until Until stops it gracefully.
package tlsid
