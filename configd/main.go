// Command configd: versioned config server, disk-cached host agent and the fleet's naming service.
package main

import "github.com/opskit/opskit/internal/kit"

func main() {
	kit.Main(kit.Spec{
		Name:    "configd",
		Listen:  "127.0.0.1:7160",
		Summary: "versioned config server, disk-cached host agent and the fleet's naming service",
		Pending: "the configd issue",
	})
}
