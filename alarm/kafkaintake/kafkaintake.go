// Package kafkaintake reads alerts from a Kafka topic: each record holds a
// v2 POST body (a JSON array of alerts) or a single alert object. Offsets
// are committed only after the alerts are stored, so a crash re-reads
// rather than loses them (re-reading an alert is harmless: it merges).
package kafkaintake

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opskit/opskit/alarm/alert"
)

// Options say what to consume.
type Options struct {
	Brokers []string
	Topic   string
	Group   string
}

// Ingester stores alerts durably (server.Server).
type Ingester interface {
	Ingest(ctx context.Context, alerts []*alert.Alert) error
}

// Decoder turns a record value into alerts (alert.Decode with the
// server's settings).
type Decoder func(body []byte) ([]*alert.Alert, []*alert.ItemError, error)

// Consumer is a running Kafka intake.
type Consumer struct {
	cl     *kgo.Client
	ing    Ingester
	decode Decoder
	log    *slog.Logger

	records, refused, stored *metrics.Counter
}

// New connects a consumer group member.
func New(o Options, ing Ingester, decode Decoder, log *slog.Logger, set *metrics.Set) (*Consumer, error) {
	if len(o.Brokers) == 0 || o.Topic == "" || o.Group == "" {
		return nil, fmt.Errorf("kafka intake needs brokers, a topic and a group")
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(o.Brokers...),
		kgo.ConsumerGroup(o.Group),
		kgo.ConsumeTopics(o.Topic),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		return nil, fmt.Errorf("kafka intake: %w", err)
	}
	return &Consumer{
		cl: cl, ing: ing, decode: decode, log: log,
		records: set.NewCounter(`opskit_alarm_kafka_records_total`),
		refused: set.NewCounter(`opskit_alarm_kafka_alerts_refused_total`),
		stored:  set.NewCounter(`opskit_alarm_kafka_alerts_stored_total`),
	}, nil
}

// Run consumes until ctx ends.
func (c *Consumer) Run(ctx context.Context) error {
	defer c.cl.Close()
	for {
		fetches := c.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			c.log.Warn("kafka fetch error", "topic", topic, "partition", p, "err", err)
		})
		var batch []*alert.Alert
		var records []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) {
			records = append(records, r)
			c.records.Inc()
			body := bytes.TrimSpace(r.Value)
			if len(body) > 0 && body[0] == '{' {
				body = append(append([]byte{'['}, body...), ']')
			}
			alerts, bad, err := c.decode(body)
			if err != nil {
				c.refused.Inc()
				c.log.Warn("kafka record refused", "partition", r.Partition, "offset", r.Offset, "err", err)
				return
			}
			for _, b := range bad {
				c.refused.Inc()
				c.log.Warn("kafka alert refused", "partition", r.Partition, "offset", r.Offset, "err", b)
			}
			batch = append(batch, alerts...)
		})
		if len(records) == 0 {
			continue
		}
		// Store, then commit; a storage failure is retried, never skipped.
		for {
			err := c.ing.Ingest(ctx, batch)
			if err == nil {
				break
			}
			c.log.Error("storing alerts from kafka failed; retrying", "alerts", len(batch), "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
		c.stored.Add(len(batch))
		if err := c.cl.CommitRecords(ctx, records...); err != nil && ctx.Err() == nil {
			c.log.Warn("kafka commit failed; the records will be read again", "err", err)
		}
	}
}
