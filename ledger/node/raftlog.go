package node

import (
	"context"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
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

// streamLayer is a raft.StreamLayer over an injected TCP listener.
type streamLayer struct {
	net.Listener
}

// Dial opens a TCP connection to a raft peer.
func (s streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", string(addr))
}

var _ raft.StreamLayer = streamLayer{}
