package instruct

//go:generate go test -run ^TestShippedSetIsGenerated$ -update .
