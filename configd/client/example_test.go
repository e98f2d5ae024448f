package client_test

import (
	"context"
	"fmt"
	"log"

	"github.com/opskit/opskit/configd/client"
)

// An application reads its files from the agent's cache and reacts to new
// releases.
func ExampleOpenNamespace() {
	cache, err := client.OpenNamespace("/var/lib/configd-agent/cache", "web/prod/app", client.CacheOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()
	port := cache.Snapshot().Int("app.properties", "port", 8080)
	fmt.Println("listening on", port)
	cache.OnChange(func(s *client.Snapshot) {
		fmt.Println("release", s.Version, "port", s.Int("app.properties", "port", 8080))
	})
}

// filefly and deployer find an app's live hosts through the naming service.
func ExampleRemote_Hosts() {
	r, err := client.NewRemote([]string{"http://configd-1:7160", "http://configd-2:7160"}, client.RemoteOptions{})
	if err != nil {
		log.Fatal(err)
	}
	hosts, err := r.Hosts(context.Background(), "web", false)
	if err != nil {
		log.Fatal(err)
	}
	for _, h := range hosts {
		fmt.Println(h.Host, h.Addr)
	}
}
