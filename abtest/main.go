// Command abtest: experiment assignment, exposure and conversion intake, statistics.
package main

import "github.com/opskit/opskit/internal/kit"

func main() {
	kit.Main(kit.Spec{
		Name:    "abtest",
		Listen:  "127.0.0.1:7190",
		Summary: "experiment assignment, exposure and conversion intake, statistics",
		Pending: "the abtest issue",
	})
}
