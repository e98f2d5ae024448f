package kafka

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/internal/testkit"
	"github.com/opskit/opskit/transfer/cluster"
)

func TestEncode(t *testing.T) {
	p := metric.Point{
		Labels: metric.New(metric.Label{Name: metric.NameLabel, Value: "cpu.idle"}, metric.Label{Name: "endpoint", Value: "web-1"}, metric.Label{Name: "dc", Value: "eu"}),
		Time:   1700000000, Value: 12.5, Step: 60, Type: metric.Counter,
	}
	key, value, err := Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(key) != `cpu.idle{dc="eu",endpoint="web-1"}` {
		t.Errorf("key %s", key)
	}
	var r Record
	if err := json.Unmarshal(value, &r); err != nil {
		t.Fatal(err)
	}
	if r.Metric != "cpu.idle" || len(r.Labels) != 2 || r.Labels["dc"] != "eu" || r.Timestamp != 1700000000 || r.Value != 12.5 || r.Step != 60 || r.CounterType != "COUNTER" {
		t.Errorf("record %+v", r)
	}
}

func TestDeliverKeysBySeries(t *testing.T) {
	kc := testkit.Kafka(t, testkit.KafkaTopic("s", 4))
	s, err := New(Options{Brokers: kc.Addrs(), Topic: "s", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var pts []metric.Point
	for step := int64(0); step < 5; step++ {
		for _, host := range []string{"a", "b", "c"} {
			pts = append(pts, metric.Point{Labels: metric.New(metric.Label{Name: metric.NameLabel, Value: "m"}, metric.Label{Name: "endpoint", Value: host}), Time: 1000 + step*60, Value: float64(step)})
		}
	}
	if err := s.Deliver(context.Background(), [][]byte{cluster.EncodeBlock(pts)}, len(pts)); err != nil {
		t.Fatal(err)
	}
	partition := map[string]int32{}
	last := map[string]int64{}
	for _, r := range kc.ReadTopic(t, "s", len(pts), 10*time.Second) {
		if p, ok := partition[string(r.Key)]; ok && p != r.Partition {
			t.Fatalf("series %s in partitions %d and %d", r.Key, p, r.Partition)
		}
		partition[string(r.Key)] = r.Partition
		var rec Record
		json.Unmarshal(r.Value, &rec)
		if rec.Timestamp < last[string(r.Key)] {
			t.Fatalf("series %s out of order", r.Key)
		}
		last[string(r.Key)] = rec.Timestamp
	}
	if len(partition) != 3 {
		t.Fatalf("%d series keys", len(partition))
	}
}
