// Command deployer: release control: per-app deploy queue, batches, health gates, rollback and audit.
package main

import "github.com/opskit/opskit/internal/kit"

func main() {
	kit.Main(kit.Spec{
		Name:    "deployer",
		Listen:  "127.0.0.1:7170",
		Summary: "release control: per-app deploy queue, batches, health gates, rollback and audit",
		Pending: "the deployer issue",
	})
}
