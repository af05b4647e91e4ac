// Package strictjson decodes JSON that fedtune parties sign or send to each
// other so that a byte string has at most one reading.
//
// encoding/json matches object member names case-insensitively and keeps
// the last of duplicate names, so a payload signed as {"name":"a",...,
// "NAME":"b"} is read as "b" by Go and possibly as "a" by a reader in
// another language. Unmarshal refuses such input instead: it uses
// github.com/go-json-experiment/json (the encoding/json/v2 API) with names
// matched exactly, duplicate names in any object refused, members that the
// target type does not declare refused, invalid UTF-8 refused and nothing
// but white space allowed after the one value.
//
// Every decoder of signed or network JSON in fedtune (ledger transaction
// payloads and bodies, DSSE envelopes, dataset manifests and proofs, tx
// bodies given to the CLI or to an aggregator) goes through Unmarshal.
// Encoding stays with encoding/json, so the bytes that are signed do not
// change.
package strictjson
