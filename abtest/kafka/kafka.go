// Package kafka produces abtest events to a Kafka topic as JSON (the same
// form POST /v1/events takes), keyed by unit so that one unit's events stay
// in order on one partition.
package kafka

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opskit/opskit/abtest/events"
)

// Producer is a forward.Destination writing to one topic.
type Producer struct {
	client *kgo.Client
	topic  string
}

// New connects to the seed brokers. Producing waits for all in-sync
// replicas, so a delivered batch is not lost with one broker.
func New(brokers []string, topic string, opts ...kgo.Opt) (*Producer, error) {
	opts = append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0)}, opts...)
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return &Producer{client: client, topic: topic}, nil
}

// Deliver produces the events and waits for every acknowledgement.
func (p *Producer) Deliver(ctx context.Context, evs []events.Event) error {
	recs := make([]*kgo.Record, len(evs))
	for i := range evs {
		value, err := json.Marshal(evs[i])
		if err != nil {
			return err
		}
		recs[i] = &kgo.Record{Key: []byte(evs[i].Unit), Value: value, Timestamp: evs[i].Time}
	}
	if err := p.client.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("kafka produce to %s: %w", p.topic, err)
	}
	return nil
}

// Close flushes and disconnects.
func (p *Producer) Close() { p.client.Close() }
