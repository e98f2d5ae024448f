// Package kafka is transfer's Kafka sink: every point a node accepts from a
// client is produced to one topic, keyed by its series so that a series
// stays in one partition and in order, in batches compressed with snappy.
//
// The sink is fed through a cluster outbox (a disk spool): while Kafka is
// unreachable, points wait in the spool up to its bound, the oldest beyond
// it are dropped and counted, and production resumes in order when Kafka
// returns. Delivery is at least once: a batch interrupted by an outage is
// produced again, so a consumer may see a record twice.
//
// Record key: the series as name{label="value",...} (metric.Labels.String).
// Record value: one JSON object per point,
//
//	{"metric":"cpu.idle","labels":{"endpoint":"web-1","dc":"eu"},
//	 "timestamp":1700000000,"value":12.5,"step":60,"counterType":"GAUGE"}
//
// with timestamp in Unix seconds and labels without the metric name.
package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/cluster"
)

// Options configure the sink.
type Options struct {
	Brokers []string
	Topic   string
	// Timeout bounds the delivery of one batch; past it the batch is
	// retried by the outbox (default 30s).
	Timeout time.Duration
}

// Sink produces points to Kafka; it is a cluster.Deliverer.
type Sink struct {
	client *kgo.Client
	opts   Options
}

// Record is the JSON value of one Kafka record.
type Record struct {
	Metric      string            `json:"metric"`
	Labels      map[string]string `json:"labels"`
	Timestamp   int64             `json:"timestamp"`
	Value       float64           `json:"value"`
	Step        int32             `json:"step"`
	CounterType string            `json:"counterType"`
}

// New creates the producer. It does not contact the brokers: a Kafka that
// is down at start is handled like any outage.
func New(opts Options) (*Sink, error) {
	if len(opts.Brokers) == 0 || opts.Topic == "" {
		return nil, errors.New("kafka sink: brokers and topic are required")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	client, err := kgo.NewClient(
		kgo.SeedBrokers(opts.Brokers...),
		kgo.DefaultProduceTopic(opts.Topic),
		kgo.ProducerBatchCompression(kgo.SnappyCompression()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.RecordDeliveryTimeout(opts.Timeout),
		kgo.ProducerLinger(5*time.Millisecond),
	)
	if err != nil {
		return nil, fmt.Errorf("kafka sink: %w", err)
	}
	return &Sink{client: client, opts: opts}, nil
}

// Encode returns the key and value of a point's record.
func Encode(p metric.Point) (key, value []byte, err error) {
	r := Record{Metric: p.Labels.Name(), Labels: make(map[string]string, len(p.Labels)), Timestamp: p.Time, Value: p.Value, Step: p.Step, CounterType: p.Type.String()}
	for _, l := range p.Labels {
		if l.Name != metric.NameLabel {
			r.Labels[l.Name] = l.Value
		}
	}
	value, err = json.Marshal(r)
	return []byte(p.Labels.String()), value, err
}

// Deliver produces a batch and returns once Kafka acknowledged every record.
func (s *Sink) Deliver(ctx context.Context, blocks [][]byte, points int) error {
	recs := make([]*kgo.Record, 0, points)
	for _, b := range blocks {
		pts, err := cluster.DecodeBlock(nil, b)
		if err != nil {
			return &cluster.PermanentError{Err: err}
		}
		for _, p := range pts {
			key, value, err := Encode(p)
			if err != nil {
				continue // NaN or Inf: not representable in JSON, never accepted by intake
			}
			recs = append(recs, &kgo.Record{Key: key, Value: value})
		}
	}
	if len(recs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	if err := s.client.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("kafka produce to %s: %w", s.opts.Topic, err)
	}
	return nil
}

// Close flushes nothing (Deliver is synchronous) and closes the client.
func (s *Sink) Close() { s.client.Close() }
