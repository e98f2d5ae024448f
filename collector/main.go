// Command collector: host agent: host metrics, app push intake (open-falcon JSON, Graphite, StatsD), plugins, log tailing to Kafka.
package main

import "github.com/opskit/opskit/internal/kit"

func main() {
	kit.Main(kit.Spec{
		Name:    "collector",
		Listen:  "127.0.0.1:7110",
		Summary: "host agent: host metrics, app push intake (open-falcon JSON, Graphite, StatsD), plugins, log tailing to Kafka",
		Pending: "the collector issues (metrics, logs)",
	})
}
