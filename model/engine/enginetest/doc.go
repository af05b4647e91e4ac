// Package enginetest is the conformance suite for engine.Device
// implementations: TestDevice runs every primitive operation on the device
// under test and on the Host reference device with the same random inputs
// and compares them, checks Host against straightforward float64 loops,
// checks each backward operation against finite differences of the float64
// forward, and checks the error contract (bad lengths, ids outside the
// vocabulary, sticky errors). TestCacheDevice does the same for the
// key/value-cache operations of an engine.CacheDevice (ScatterRows,
// CachedAttention, PackWeight). It is in the default build so that tagged
// tests of other devices (the CUDA one) can import it.
package enginetest
