package testkit

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestKafkaProduceConsume(t *testing.T) {
	tests := []struct {
		name       string
		brokers    int
		partitions int32
		records    int
	}{
		{name: "one broker one partition", brokers: 1, partitions: 1, records: 10},
		{name: "three brokers three partitions", brokers: 3, partitions: 3, records: 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const topic = "logs"
			cluster := Kafka(t, KafkaBrokers(tt.brokers), KafkaTopic(topic, tt.partitions))
			if got := len(cluster.Addrs()); got != tt.brokers {
				t.Fatalf("Addrs() has %d brokers, want %d", got, tt.brokers)
			}
			for _, addr := range cluster.Addrs() {
				if !strings.HasPrefix(addr, "127.0.0.1:") {
					t.Errorf("broker address %q is not on loopback", addr)
				}
			}

			want := produceLines(t, cluster, topic, tt.records)
			got := recordValues(cluster.ReadTopic(t, topic, tt.records, 10*time.Second))
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Fatalf("consumed %q, want %q", got, want)
			}
		})
	}
}

func TestKafkaPartitionCount(t *testing.T) {
	cluster := Kafka(t, KafkaBrokers(2), KafkaTopic("metrics", 4), KafkaTopic("logs", 2))
	client := cluster.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	req := kmsg.NewPtrMetadataRequest()
	for _, name := range []string{"metrics", "logs"} {
		topic := kmsg.NewMetadataRequestTopic()
		topic.Topic = kmsg.StringPtr(name)
		req.Topics = append(req.Topics, topic)
	}
	resp, err := req.RequestWith(ctx, client)
	if err != nil {
		t.Fatalf("metadata request: %v", err)
	}
	if got := len(resp.Brokers); got != 2 {
		t.Errorf("metadata lists %d brokers, want 2", got)
	}
	got := map[string]int{}
	for _, topic := range resp.Topics {
		if topic.ErrorCode != 0 {
			t.Errorf("topic %s: error code %d", *topic.Topic, topic.ErrorCode)
		}
		got[*topic.Topic] = len(topic.Partitions)
	}
	want := map[string]int{"metrics": 4, "logs": 2}
	if !maps.Equal(got, want) {
		t.Fatalf("partitions per topic = %v, want %v", got, want)
	}
}

func TestKafkaUnknownTopicIsNotCreated(t *testing.T) {
	cluster := Kafka(t)
	client := cluster.Client(t, kgo.RecordRetries(1), kgo.RecordDeliveryTimeout(2*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := client.ProduceSync(ctx, &kgo.Record{Topic: "missing", Value: []byte("x")}).FirstErr()
	if err == nil {
		t.Fatal("produce to a topic that was never created succeeded, want an error")
	}
}

// TestKafkaWithKcat proves that an independent client (librdkafka's kcat)
// reads what franz-go wrote, so the fake cluster speaks real Kafka.
func TestKafkaWithKcat(t *testing.T) {
	kcat := RequireBinary(t, "kcat", "kcat")
	const topic = "events"
	cluster := Kafka(t, KafkaTopic(topic, 2))
	want := produceLines(t, cluster, topic, 8)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat,
		"-b", strings.Join(cluster.Addrs(), ","),
		"-C", "-t", topic, "-e", "-o", "beginning", "-q", "-f", "%s\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, stderr.String())
	}
	got := strings.Fields(string(out))
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("kcat read %q, want %q (stderr: %s)", got, want, stderr.String())
	}
}

// produceLines writes n records "line-000".."line-NNN" to topic and returns
// their values sorted.
func produceLines(t *testing.T, cluster *KafkaCluster, topic string, n int) []string {
	t.Helper()
	client := cluster.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	values := make([]string, n)
	records := make([]*kgo.Record, n)
	for i := range n {
		values[i] = fmt.Sprintf("line-%03d", i)
		records[i] = &kgo.Record{Topic: topic, Value: []byte(values[i])}
	}
	if err := client.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatalf("produce %d records to %s: %v", n, topic, err)
	}
	slices.Sort(values)
	return values
}

func recordValues(records []*kgo.Record) []string {
	values := make([]string, len(records))
	for i, r := range records {
		values[i] = string(r.Value)
	}
	return values
}

// BenchmarkKafkaProduce measures how fast the fake cluster takes records, the
// ceiling for benchmarks that write through it.
func BenchmarkKafkaProduce(b *testing.B) {
	const topic = "bench"
	cluster := Kafka(b, KafkaTopic(topic, 3))
	client := cluster.Client(b, kgo.ProducerLinger(0))
	value := make([]byte, 100)
	ctx := context.Background()
	b.SetBytes(int64(len(value)))
	b.ResetTimer()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range b.N {
		wg.Add(1)
		client.Produce(ctx, &kgo.Record{Topic: topic, Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d records failed", n)
	}
}
