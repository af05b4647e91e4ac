package engine

// UseISA switches the Host's instruction set for the external tests.
var UseISA = useISA

// BestISA is the most this CPU and build offer.
var BestISA = bestISA
