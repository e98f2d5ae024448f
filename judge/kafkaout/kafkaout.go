// Package kafkaout produces judge's alert transitions (firing, repeat,
// resolved) to a Kafka topic, one JSON record each, for consumers other
// than Alertmanager. The record key is the alert's labels, sorted, so the
// transitions of one alert stay in one partition and in order. Delivery is
// best effort: records wait in the client while Kafka is unreachable, and
// those still undelivered after the delivery timeout are dropped and
// counted; Alertmanager delivery does not depend on Kafka.
package kafkaout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opskit/opskit/judge/engine"
)

// Options configure the producer.
type Options struct {
	Brokers []string
	Topic   string
	// Timeout bounds how long a record may wait for delivery (default 1m).
	Timeout time.Duration
}

// Producer sends transitions to Kafka.
type Producer struct {
	client           *kgo.Client
	produced, failed atomic.Uint64
}

// New creates the producer; it does not contact the brokers yet.
func New(opts Options) (*Producer, error) {
	if len(opts.Brokers) == 0 || opts.Topic == "" {
		return nil, errors.New("kafka output: brokers and topic are required")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Minute
	}
	client, err := kgo.NewClient(
		kgo.SeedBrokers(opts.Brokers...),
		kgo.DefaultProduceTopic(opts.Topic),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.RecordDeliveryTimeout(opts.Timeout),
		kgo.ProducerLinger(5*time.Millisecond),
	)
	if err != nil {
		return nil, fmt.Errorf("kafka output: %w", err)
	}
	return &Producer{client: client}, nil
}

// Key is a transition's record key: its labels as name="value", sorted.
func Key(labels map[string]string) []byte {
	names := make([]string, 0, len(labels))
	for k := range labels {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, k := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, labels[k])
	}
	return []byte(b.String())
}

// Send produces transitions without waiting for Kafka.
func (p *Producer) Send(trs []engine.Transition) {
	for _, t := range trs {
		value, err := json.Marshal(t)
		if err != nil {
			p.failed.Add(1)
			continue
		}
		p.client.Produce(context.Background(), &kgo.Record{Key: Key(t.Labels), Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				p.failed.Add(1)
				return
			}
			p.produced.Add(1)
		})
	}
}

// Counts returns the records delivered and those dropped.
func (p *Producer) Counts() (produced, failed uint64) { return p.produced.Load(), p.failed.Load() }

// Close delivers what is buffered, within ctx, and closes the client.
func (p *Producer) Close(ctx context.Context) error {
	err := p.client.Flush(ctx)
	p.client.Close()
	if err != nil {
		return fmt.Errorf("kafka output: flush: %w", err)
	}
	return nil
}
