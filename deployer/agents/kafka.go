package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opskit/opskit/deploy/release"
)

// Kafka hands tasks to agents over Kafka (deploy/kafkatasks is the agent's
// side): each task is a record keyed by host name on TasksTopic, produced
// with franz-go's idempotent producer; results come back on ResultsTopic
// keyed by task id. A record cannot be taken back, so Withdraw does
// nothing: an agent runs a task of a deploy stopped meanwhile, and its
// result is recorded but no longer drives anything.
type Kafka struct {
	client       *kgo.Client
	tasksTopic   string
	resultsTopic string
	log          *slog.Logger
}

// KafkaOptions configure NewKafka.
type KafkaOptions struct {
	Brokers      []string
	TasksTopic   string
	ResultsTopic string
	// Group is the consumer group reading results.
	Group string
	Log   *slog.Logger
}

// NewKafka connects (lazily) to the brokers.
func NewKafka(o KafkaOptions) (*Kafka, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(o.Brokers...),
		kgo.ConsumerGroup(o.Group),
		kgo.ConsumeTopics(o.ResultsTopic),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	return &Kafka{client: cl, tasksTopic: o.TasksTopic, resultsTopic: o.ResultsTopic, log: o.Log}, nil
}

// Close closes the client.
func (k *Kafka) Close() { k.client.Close() }

// Send produces the task keyed by host and waits for the brokers' ack.
func (k *Kafka) Send(ctx context.Context, host string, t release.Task) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := k.client.ProduceSync(ctx, &kgo.Record{Topic: k.tasksTopic, Key: []byte(host), Value: b}).FirstErr(); err != nil {
		return fmt.Errorf("kafka produce task %s: %w", t.ID, err)
	}
	return nil
}

// Withdraw does nothing (see Kafka).
func (k *Kafka) Withdraw(string, string) {}

// Results consumes the results topic until ctx ends, giving each result to
// report; a record's offset is committed once report accepted it, so a
// result deployer could not record (e.g. while standing by) comes again.
func (k *Kafka) Results(ctx context.Context, report func(release.Result) error) error {
	for {
		fetches := k.client.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			k.log.Warn("kafka fetch failed", "topic", topic, "partition", p, "err", err)
		})
		var recs []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
		for _, r := range recs {
			var res release.Result
			if err := json.Unmarshal(r.Value, &res); err != nil {
				k.log.Warn("malformed task result skipped", "key", string(r.Key), "err", err)
			} else {
				for {
					err := report(res)
					if err == nil {
						break
					}
					k.log.Warn("recording a task result failed; retrying", "task", res.Task.ID, "err", err)
					select {
					case <-ctx.Done():
						return nil
					case <-time.After(time.Second):
					}
				}
			}
			if err := k.client.CommitRecords(ctx, r); err != nil && ctx.Err() == nil {
				k.log.Warn("kafka commit failed", "err", err)
			}
		}
	}
}
