package datasets

//go:generate go test -run ^TestShippedTasksAreGenerated$ -update .
