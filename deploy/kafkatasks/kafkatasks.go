// Package kafkatasks takes a host's tasks from a Kafka topic instead of
// deployer's long poll. Records are keyed by host name and hold one task's
// JSON; each host reads the whole topic in its own consumer group and runs
// the records keyed by its name. A record's offset is committed only after
// the task's result is recorded on disk and produced to the results topic
// (keyed by task id), so the broker's redelivery is the retry, and the
// applier's idempotency by id makes a redelivered task harmless.
package kafkatasks

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opskit/opskit/deploy/release"
)

// Applier runs one task; *release.Applier is one.
type Applier interface {
	Apply(ctx context.Context, t release.Task) (*release.Result, error)
}

// Consumer runs one host's tasks from Kafka.
type Consumer struct {
	Brokers      []string
	Topic        string
	ResultsTopic string
	// Group defaults to opskit-deploy-<host>.
	Group   string
	Host    string
	Applier Applier
	Log     *slog.Logger
}

// Run consumes until ctx ends.
func (c *Consumer) Run(ctx context.Context) error {
	if c.Group == "" {
		c.Group = "opskit-deploy-" + c.Host
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.Brokers...),
		kgo.ConsumerGroup(c.Group),
		kgo.ConsumeTopics(c.Topic),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	defer cl.Close()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			c.Log.Warn("kafka fetch failed", "topic", topic, "partition", p, "err", err)
		})
		var recs []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
		for _, r := range recs {
			if string(r.Key) == c.Host {
				if err := c.handle(ctx, cl, r); err != nil {
					return nil // ctx ended: uncommitted, redelivered later
				}
			}
			for ctx.Err() == nil {
				if err := cl.CommitRecords(ctx, r); err == nil {
					break
				} else {
					c.Log.Warn("kafka commit failed; retrying", "err", err)
					sleep(ctx, time.Second)
				}
			}
		}
	}
}

// handle applies one record's task and produces its result, retrying the
// produce until it succeeds or ctx ends.
func (c *Consumer) handle(ctx context.Context, cl *kgo.Client, r *kgo.Record) error {
	var t release.Task
	var res *release.Result
	if err := json.Unmarshal(r.Value, &t); err != nil {
		res = &release.Result{State: release.StateFailed, Error: "task record: " + err.Error(), Started: time.Now().UTC(), Finished: time.Now().UTC()}
	} else if err := t.Validate(); err != nil {
		res = &release.Result{Task: t, State: release.StateFailed, Error: err.Error(), Started: time.Now().UTC(), Finished: time.Now().UTC()}
	} else {
		res, err = c.Applier.Apply(ctx, t)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if res == nil {
			res = &release.Result{Task: t, State: release.StateFailed, Error: err.Error(), Started: time.Now().UTC(), Finished: time.Now().UTC()}
		}
	}
	body, _ := json.Marshal(res)
	out := &kgo.Record{Topic: c.ResultsTopic, Key: []byte(res.Task.ID), Value: body,
		Headers: []kgo.RecordHeader{{Key: "host", Value: []byte(c.Host)}}}
	for {
		err := cl.ProduceSync(ctx, out).FirstErr()
		if err == nil {
			c.Log.Info("task result produced", "task", res.Task.ID, "state", res.State, "topic", c.ResultsTopic)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.Log.Warn("producing a task result failed; retrying", "task", res.Task.ID, "err", err)
		sleep(ctx, time.Second)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
