package server

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/configd/client"
)

// BenchmarkWatchWake measures one change reaching 100 parked watchers over
// loopback HTTP: the publish (with its fsync), every watch answering, and
// every watcher fetching the release. The time sleeping while the watchers
// park is excluded.
func BenchmarkWatchWake(b *testing.B) {
	s := startServer(b, Config{WatchTimeout: time.Minute, WatchBatch: 500, WatchBatchInterval: 5 * time.Millisecond})
	ctx := context.Background()
	const ns, watchers = "bench/prod/app", 100
	admin := remote(b, s.url, client.RemoteOptions{})
	admin.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("f", "0")}})
	c := remote(b, s.url, client.RemoteOptions{HTTPClient: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * watchers}}})
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		held := int64(i + 1)
		done := make(chan error, watchers)
		for range watchers {
			go func() {
				_, err := c.Watch(ctx, map[string]int64{ns: held}, "h", nil, time.Minute)
				if err == nil {
					_, err = c.Config(ctx, ns, "h", nil)
				}
				done <- err
			}()
		}
		for s.hub.watchers() < watchers {
			time.Sleep(time.Millisecond)
		}
		b.StartTimer()
		if _, err := admin.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("f", "x")}}); err != nil {
			b.Fatal(err)
		}
		for range watchers {
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
	}
}
