// Package freeport picks loopback TCP addresses for processes that must
// know their listen address before they start: a devnet's ledger nodes name
// each other in the genesis, so their ports are fixed when it is written.
//
// It draws ports from below Linux's ephemeral range (32768-60999). A port
// the kernel hands out for port 0 is also the kind it hands to the next
// outgoing connection, so with many tests dialing at once another socket
// can take it between our pick and the node's bind. A port returned once is
// not returned again by the same process, nor by any other process on the
// machine for Hold: each return leaves a reservation file in
// $TMPDIR/fedtune-freeport, so test binaries running side by side (go test
// runs packages in parallel) do not hand out the same port.
//
//	addr, err := freeport.Addr() // "127.0.0.1:23456"
package freeport
