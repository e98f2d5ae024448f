// Command example shows an application reading its configuration through
// the configd SDK: it loads a namespace from the agent's cache, prints a
// setting, and prints it again after every release the agent switches in.
// It needs no agent running, only the cache on disk.
//
//	go run ./configd/client/example --cache-dir var/configd-agent/cache --namespace web/prod/app --file app.properties --key port
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"

	"github.com/opskit/opskit/configd/client"
)

func main() {
	cacheDir := flag.String("cache-dir", "var/configd-agent/cache", "the agent's cache directory")
	namespace := flag.String("namespace", "web/prod/app", "namespace app/env/name")
	file := flag.String("file", "app.properties", "properties file to read")
	key := flag.String("key", "port", "key to print")
	flag.Parse()

	cache, err := client.OpenNamespace(*cacheDir, *namespace, client.CacheOptions{
		OnError: func(err error) { log.Printf("keeping the last good release: %v", err) },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()

	show := func(s *client.Snapshot) {
		fmt.Printf("version %d: %s = %s\n", s.Version, *key, s.Property(*file, *key, "(unset)"))
	}
	show(cache.Snapshot())
	cache.OnChange(show)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt)
	<-stop
}
