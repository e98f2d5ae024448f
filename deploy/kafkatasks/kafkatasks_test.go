package kafkatasks

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opskit/opskit/deploy/release"
	"github.com/opskit/opskit/internal/testkit"
)

type fakeApplier struct {
	mu  sync.Mutex
	ids []string
}

func (f *fakeApplier) Apply(_ context.Context, t release.Task) (*release.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids = append(f.ids, t.ID)
	return &release.Result{Task: t, State: release.StateDone}, nil
}

func TestConsumerRunsOwnTasksAndProducesResults(t *testing.T) {
	k := testkit.Kafka(t, testkit.KafkaTopic("tasks", 2), testkit.KafkaTopic("results", 1))
	prod := k.Client(t)
	sha := strings.Repeat("b", 64)
	task := func(id string) []byte {
		b, _ := json.Marshal(release.Task{ID: id, App: "web", Version: "1", Package: "/p", SHA256: sha})
		return b
	}
	for _, r := range []*kgo.Record{
		{Topic: "tasks", Key: []byte("h1"), Value: task("mine")},
		{Topic: "tasks", Key: []byte("h2"), Value: task("theirs")},
		{Topic: "tasks", Key: []byte("h1"), Value: []byte("not json")},
	} {
		if err := prod.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	app := &fakeApplier{}
	c := &Consumer{Brokers: k.Addrs(), Topic: "tasks", ResultsTopic: "results", Host: "h1", Applier: app}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	recs := k.ReadTopic(t, "results", 2, 10*time.Second)
	cancel()
	<-done
	states := map[string]string{}
	for _, r := range recs {
		var res release.Result
		json.Unmarshal(r.Value, &res)
		states[string(r.Key)] = res.State
	}
	if states["mine"] != release.StateDone || states[""] != release.StateFailed || len(states) != 2 {
		t.Fatalf("results %v", states)
	}
	if len(app.ids) != 1 || app.ids[0] != "mine" {
		t.Fatalf("applied %v", app.ids)
	}
}
