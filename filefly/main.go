// Command filefly: file distribution to every host of an app, relayed host to host.
package main

import "github.com/opskit/opskit/internal/kit"

func main() {
	kit.Main(kit.Spec{
		Name:    "filefly",
		Listen:  "127.0.0.1:7180",
		Summary: "file distribution to every host of an app, relayed host to host",
		Pending: "the filefly issue",
	})
}
