// Command deploy: per-host deploy agent and process supervisor.
package main

import "github.com/opskit/opskit/internal/kit"

func main() {
	kit.Main(kit.Spec{
		Name:    "deploy",
		Listen:  "127.0.0.1:7171",
		Summary: "per-host deploy agent and process supervisor",
		Pending: "the deploy issue",
	})
}
