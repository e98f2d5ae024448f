// Command transfer: metrics intake, round-robin storage and the Prometheus-compatible query API.
package main

import "github.com/opskit/opskit/internal/kit"

func main() {
	kit.Main(kit.Spec{
		Name:    "transfer",
		Listen:  "127.0.0.1:7120",
		Summary: "metrics intake, round-robin storage and the Prometheus-compatible query API",
		Pending: "the transfer (node) issue",
	})
}
