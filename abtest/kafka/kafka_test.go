package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/opskit/opskit/abtest/events"
	"github.com/opskit/opskit/internal/testkit"
)

func TestProduceToKafka(t *testing.T) {
	cluster := testkit.Kafka(t, testkit.KafkaTopic("ab_events", 3))
	p, err := New(cluster.Addrs(), "ab_events")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var evs []events.Event
	for i := range 30 {
		evs = append(evs, events.Event{Kind: events.Conversion, Unit: fmt.Sprint("u", i%10), Experiment: "e", Name: "buy", Value: 1, Time: time.Unix(1700000000+int64(i), 0)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Deliver(ctx, evs); err != nil {
		t.Fatal(err)
	}
	recs := cluster.ReadTopic(t, "ab_events", 30, 10*time.Second)
	partitionOf := map[string]int32{}
	for _, r := range recs {
		var e events.Event
		if err := json.Unmarshal(r.Value, &e); err != nil {
			t.Fatalf("record %s: %v", r.Value, err)
		}
		if string(r.Key) != e.Unit || e.Kind != events.Conversion || e.Experiment != "e" {
			t.Errorf("record key %s value %+v", r.Key, e)
		}
		if p, ok := partitionOf[e.Unit]; ok && p != r.Partition {
			t.Errorf("unit %s on partitions %d and %d", e.Unit, p, r.Partition)
		}
		partitionOf[e.Unit] = r.Partition
	}
	// A topic that does not exist fails delivery (and the forwarder retries).
	bad, _ := New(cluster.Addrs(), "missing")
	defer bad.Close()
	short, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if err := bad.Deliver(short, evs[:1]); err == nil {
		t.Error("produce to a missing topic succeeded")
	}
}
