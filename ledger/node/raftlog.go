package node

import (
	"context"
	"io"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// hclogFor returns an hclog.Logger for hashicorp/raft that forwards every
// record to log, keeping raft's message and key/value pairs.
func hclogFor(log *slog.Logger, name string) hclog.Logger {
	level := hclog.Info
	if log.Enabled(context.Background(), slog.LevelDebug) {
		level = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:   name,
		Level:  level,
		Output: io.Discard,
		Exclude: func(l hclog.Level, msg string, args ...any) bool {
			var sl slog.Level
			switch {
			case l >= hclog.Error:
				sl = slog.LevelError
			case l == hclog.Warn:
				sl = slog.LevelWarn
			case l == hclog.Info:
				sl = slog.LevelInfo
			default:
				sl = slog.LevelDebug
			}
			log.Log(context.Background(), sl, msg, append([]any{"component", name}, args...)...)
			return true
		},
	})
}
