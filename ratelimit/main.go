// Command ratelimit: rate-limiting and adaptive-concurrency HTTP gateway, and a pipe throttle.
package main

import "github.com/opskit/opskit/internal/kit"

func main() {
	kit.Main(kit.Spec{
		Name:    "ratelimit",
		Listen:  "127.0.0.1:7150",
		Summary: "rate-limiting and adaptive-concurrency HTTP gateway, and a pipe throttle",
		Pending: "the ratelimit issue",
	})
}
