package testkit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaCluster is an in-process fake Kafka cluster speaking the real Kafka
// protocol on loopback. Any Kafka client (franz-go, kcat, librdkafka) can talk
// to it through Addrs.
type KafkaCluster struct {
	fake *kfake.Cluster
}

// KafkaOption configures Kafka.
type KafkaOption func(*kafkaSettings)

type kafkaSettings struct {
	brokers int
	topics  []kafkaTopic
}

type kafkaTopic struct {
	name       string
	partitions int32
}

// KafkaBrokers sets how many brokers the cluster runs (default 1).
func KafkaBrokers(n int) KafkaOption {
	return func(s *kafkaSettings) { s.brokers = n }
}

// KafkaTopic creates topic name with the given number of partitions before
// Kafka returns. Topics that are not created up front do not exist: the fake
// cluster, like a production one, does not create topics on first use.
func KafkaTopic(name string, partitions int32) KafkaOption {
	return func(s *kafkaSettings) {
		s.topics = append(s.topics, kafkaTopic{name: name, partitions: partitions})
	}
}

// Kafka starts a fake Kafka cluster on loopback and closes it when the test
// ends.
func Kafka(t testing.TB, opts ...KafkaOption) *KafkaCluster {
	t.Helper()
	settings := kafkaSettings{brokers: 1}
	for _, opt := range opts {
		opt(&settings)
	}
	if settings.brokers < 1 {
		t.Fatalf("testkit.Kafka: %d brokers, want at least 1", settings.brokers)
	}
	fakeOpts := []kfake.Opt{kfake.NumBrokers(settings.brokers)}
	for _, topic := range settings.topics {
		if topic.name == "" || topic.partitions < 1 {
			t.Fatalf("testkit.Kafka: topic %q with %d partitions, want a name and at least 1 partition",
				topic.name, topic.partitions)
		}
		fakeOpts = append(fakeOpts, kfake.SeedTopics(topic.partitions, topic.name))
	}
	fake, err := kfake.NewCluster(fakeOpts...)
	if err != nil {
		t.Fatalf("testkit.Kafka: start fake cluster: %v", err)
	}
	t.Cleanup(fake.Close)
	return &KafkaCluster{fake: fake}
}

// Addrs returns the brokers' "127.0.0.1:PORT" addresses, usable as seed
// brokers.
func (c *KafkaCluster) Addrs() []string {
	return c.fake.ListenAddrs()
}

// Fake returns the underlying kfake cluster, for tests that inject faults
// (kfake.Cluster.ControlKey) or move partitions between brokers.
func (c *KafkaCluster) Fake() *kfake.Cluster {
	return c.fake
}

// Client returns a franz-go client seeded with the cluster's brokers and
// configured by opts; it is closed when the test ends.
func (c *KafkaCluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	all := append([]kgo.Opt{kgo.SeedBrokers(c.Addrs()...)}, opts...)
	client, err := kgo.NewClient(all...)
	if err != nil {
		t.Fatalf("testkit: new Kafka client: %v", err)
	}
	t.Cleanup(client.Close)
	return client
}

// ReadTopic consumes topic from the beginning until it has n records and
// returns them, failing the test if they do not arrive within timeout.
// Records of different partitions may interleave in any order.
func (c *KafkaCluster) ReadTopic(t testing.TB, topic string, n int, timeout time.Duration) []*kgo.Record {
	t.Helper()
	client, err := kgo.NewClient(
		kgo.SeedBrokers(c.Addrs()...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		t.Fatalf("testkit: new Kafka consumer for %s: %v", topic, err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var records []*kgo.Record
	for len(records) < n {
		fetches := client.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("testkit: read %s: got %d of %d records within %v", topic, len(records), n, timeout)
		}
		var fetchErr error
		fetches.EachError(func(_ string, _ int32, err error) {
			fetchErr = errors.Join(fetchErr, err)
		})
		if fetchErr != nil {
			t.Fatalf("testkit: read %s: %v", topic, fetchErr)
		}
		records = append(records, fetches.Records()...)
	}
	return records
}
