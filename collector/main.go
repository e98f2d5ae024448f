// Command collector is opskit's host agent: host metrics from /proc and
// /sys, app push intake (open-falcon JSON, Graphite, StatsD), plugin
// scripts, and relay to transfer with a disk spool. See collector/README.md.
package main

import (
	"context"

	"github.com/opskit/opskit/collector/agent"
	"github.com/opskit/opskit/internal/kit"
)

func main() {
	kit.Main(kit.Spec{
		Name:    "collector",
		Listen:  "127.0.0.1:7110",
		Summary: "host agent: host metrics, app push intake (open-falcon JSON, Graphite, StatsD), plugins, log tailing to Kafka",
		Pending: "the collector issues (metrics, logs)",
		Commands: []kit.Command{{
			Name:    "once",
			Summary: "print one round of host metrics as open-falcon JSON lines (for transfer push)",
			Run: func(ctx context.Context, args []string, io kit.IO) int {
				return agent.Once(ctx, args, io.Out, io.Err)
			},
		}},
	})
}
