package kafkaout

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/testkit"
	"github.com/opskit/opskit/judge/engine"
)

func TestSendProducesOrderedRecords(t *testing.T) {
	k := testkit.Kafka(t, testkit.KafkaTopic("alerts", 3))
	p, err := New(Options{Brokers: k.Addrs(), Topic: "alerts"})
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"alertname": "CPUBusy", "endpoint": "web-1"}
	at := time.Unix(1_700_000_000, 0).UTC()
	p.Send([]engine.Transition{
		{Status: "firing", Alert: "CPUBusy", Labels: labels, Value: 95, At: at, StartsAt: at},
		{Status: "resolved", Alert: "CPUBusy", Labels: labels, Value: 20, At: at.Add(time.Minute), StartsAt: at, Duration: "1m0s"},
	})
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := k.ReadTopic(t, "alerts", 2, 10*time.Second)
	var got []string
	for _, r := range recs {
		if string(r.Key) != `alertname="CPUBusy",endpoint="web-1"` {
			t.Fatalf("key %s", r.Key)
		}
		var tr engine.Transition
		if err := json.Unmarshal(r.Value, &tr); err != nil {
			t.Fatal(err)
		}
		got = append(got, tr.Status)
	}
	if len(got) != 2 || got[0] != "firing" || got[1] != "resolved" || recs[0].Partition != recs[1].Partition {
		t.Fatalf("records %v", got)
	}
	if ok, failed := p.Counts(); ok != 2 || failed != 0 {
		t.Fatalf("counts %d %d", ok, failed)
	}
}

func TestNeedsBrokersAndTopic(t *testing.T) {
	if _, err := New(Options{Topic: "x"}); err == nil {
		t.Fatal("no brokers accepted")
	}
}
