package ship

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opskit/opskit/collector/tail"
	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/hop"
)

// KafkaConfig configures the Kafka output.
type KafkaConfig struct {
	Brokers []string
	// Compression is zstd (default), lz4, snappy, gzip or none.
	Compression string
	// Linger is how long a batch may wait to fill (default 5ms).
	Linger time.Duration
	// BatchBytes bounds one record batch (default 1 MiB). A line whose
	// event is larger is cut to fit and marked truncated.
	BatchBytes int32
	// BufferBytes bounds the records buffered and in flight (default 4
	// MiB). When it is full, Emit blocks: the tailer stops reading until
	// Kafka takes more, so a broker outage costs waiting, not memory.
	BufferBytes int
	// RetryWait is the pause before producing again a record that Kafka
	// refused for good (e.g. a missing topic); default 1s.
	RetryWait time.Duration
	// Host is the event's host and the record key of inputs keyed by host.
	Host string
	// Dye, when set, traces dyed lines (by path or substring) at intake
	// and on Kafka's acknowledgement.
	Dye *dye.Tracer
}

// Kafka produces events to the topics of their inputs.
type Kafka struct {
	cfg    KafkaConfig
	client *kgo.Client
	enc    *Encoder
	log    *slog.Logger

	produced, failed *metrics.Counter
	// cut counts lines cut so that their event fits a record batch.
	cut *metrics.Counter
	// hop counts lines Kafka acknowledged, with their latency from the
	// line's reading (waits for buffer space included), under
	// to="kafka://FIRSTBROKER".
	hop     *hop.Hop
	recSlab []shippedRecord
	// onAck is k.promise, bound once.
	onAck   func(*kgo.Record, error)
	valSlab []byte
	// space is signalled when a record leaves the buffer.
	space chan struct{}
	// prodCtx outlives the tailer's context, so records buffered when the
	// daemon stops are still sent by Close rather than failed.
	prodCtx    context.Context
	prodCancel context.CancelFunc
	closing    chan struct{}
	closeOnce  sync.Once
	retries    sync.WaitGroup

	logMu   sync.Mutex
	lastLog time.Time
}

// Compression codecs by name.
func codec(name string) (kgo.CompressionCodec, error) {
	switch strings.ToLower(name) {
	case "", "zstd":
		// The fastest level: an agent on every host should spend little
		// CPU; the ratio stays close to the default level's on logs.
		return kgo.ZstdCompression().WithLevel(1), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "none":
		return kgo.NoCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("compression %q: want zstd, lz4, snappy, gzip or none", name)
}

// NewKafka returns the Kafka output. It does not wait for the brokers: an
// unreachable cluster only delays delivery.
func NewKafka(cfg KafkaConfig, set *metrics.Set, log *slog.Logger) (*Kafka, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("kafka: no brokers")
	}
	c, err := codec(cfg.Compression)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	if cfg.Linger <= 0 {
		cfg.Linger = 5 * time.Millisecond
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 1 << 20
	}
	if cfg.BufferBytes <= 0 {
		cfg.BufferBytes = 4 << 20
	}
	if cfg.RetryWait <= 0 {
		cfg.RetryWait = time.Second
	}
	client, err := kgo.NewClient(
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ProducerBatchCompression(c),
		kgo.ProducerLinger(cfg.Linger),
		kgo.ProducerBatchMaxBytes(cfg.BatchBytes),
		// Emit waits below BufferBytes; the margin keeps Produce itself
		// from blocking.
		kgo.MaxBufferedBytes(cfg.BufferBytes+2*int(cfg.BatchBytes)),
		kgo.MaxBufferedRecords(1<<20),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// Retries without end: an outage is waited out with the buffer
		// full and reading paused.
		kgo.RecordRetries(1<<30),
	)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	if set == nil {
		set = metrics.NewSet()
	}
	prodCtx, prodCancel := context.WithCancel(context.Background())
	k := &Kafka{cfg: cfg, client: client, log: log, closing: make(chan struct{}),
		space: make(chan struct{}, 1), prodCtx: prodCtx, prodCancel: prodCancel,
		enc:      &Encoder{Host: cfg.Host, InvalidUTF8: set.GetOrCreateCounter("opskit_collector_logs_invalid_utf8_lines_total")},
		produced: set.GetOrCreateCounter("opskit_collector_logs_kafka_acked_events_total"),
		hop:      hop.New(set, hop.KafkaAddr(cfg.Brokers)),
		failed:   set.GetOrCreateCounter("opskit_collector_logs_kafka_failed_events_total"),
		cut:      set.GetOrCreateCounter("opskit_collector_logs_kafka_cut_lines_total"),
	}
	k.onAck = k.promise
	return k, nil
}

// Key returns the record key of ev by its input's key rule.
func Key(ev *tail.Event, host string) []byte {
	if ev.Input == nil {
		return []byte(ev.Path)
	}
	switch k := ev.Input.Key; {
	case k == "host":
		return []byte(host)
	case k == "none":
		return nil
	case strings.HasPrefix(k, "field:"):
		return []byte(ev.Input.Fields[k[len("field:"):]])
	}
	return []byte(ev.Path)
}

// Emit produces ev; it blocks while the buffer is full.
func (k *Kafka) Emit(ctx context.Context, ev *tail.Event) error {
	topic := ""
	if ev.Input != nil {
		topic = ev.Input.Topic
	}
	// Records and their values come from slabs (Emit is called from one
	// goroutine), a few allocations per thousand events.
	if len(k.recSlab) == 0 {
		k.recSlab = make([]shippedRecord, 256)
	}
	shipped := &k.recSlab[0]
	k.recSlab = k.recSlab[1:]
	rec := &shipped.rec
	size := k.enc.Size(ev)
	if len(k.valSlab) < size {
		k.valSlab = make([]byte, max(256<<10, size))
	}
	value := k.enc.Append(k.valSlab[:0:size], ev)
	if len(value) <= size {
		k.valSlab = k.valSlab[len(value):]
	}
	key := Key(ev, k.cfg.Host)
	if limit := int(k.cfg.BatchBytes) - recordOverhead - len(key); len(value) > limit {
		// The client refuses a record larger than a batch, and would
		// refuse it again on every retry: the line is cut to fit.
		value = k.fit(ev, limit)
	}
	shipped.ctx = eventContext{Context: k.prodCtx, ev: ev}
	// The record's time is the line's read time, shared by the lines of
	// one read, which spares the client a clock reading per record.
	*rec = kgo.Record{Topic: topic, Key: key, Value: value, Timestamp: ev.Time, Context: &shipped.ctx}
	for k.client.BufferedProduceBytes() >= int64(k.cfg.BufferBytes) {
		select {
		case <-k.space:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if k.cfg.Dye.Active() {
		if id := k.cfg.Dye.MatchLine(k.cfg.Host, ev.Path, ev.Line); id != "" {
			k.cfg.Dye.Hop(id, "intake", lineSummary(ev), time.Since(ev.Time))
		}
	}
	k.client.Produce(k.prodCtx, rec, k.onAck)
	return nil
}

// recordOverhead bounds what a batch and a record's framing add to its key
// and value.
const recordOverhead = 512

// fit encodes ev with its line cut (at a character boundary, marked
// truncated) so that the event takes at most limit bytes.
func (k *Kafka) fit(ev *tail.Event, limit int) []byte {
	k.cut.Inc()
	k.warn("a line's event is larger than --kafka-batch-bytes; cutting the line", "path", ev.Path, "offset", ev.Offset)
	cut := *ev
	cut.Truncated = true
	value := k.enc.Append(make([]byte, 0, limit), &cut)
	for len(value) > limit && len(cut.Line) > 0 {
		// In proportion: an escaped or invalid byte takes more than one.
		n := min(len(cut.Line)-1, int(int64(len(cut.Line))*int64(limit)/int64(len(value))))
		for n > 0 && !utf8.RuneStart(cut.Line[n]) {
			n--
		}
		cut.Line = cut.Line[:n]
		value = k.enc.Append(value[:0], &cut)
	}
	return value
}

// shippedRecord is a record and the event it carries, allocated together.
type shippedRecord struct {
	rec kgo.Record
	ctx eventContext
}

// eventContext is a record's context (the producer's) carrying its event
// to the promise, so that one promise function serves every record rather
// than a closure allocated per record.
type eventContext struct {
	context.Context
	ev *tail.Event
}

// lineSummary describes a log line in a trace record.
func lineSummary(ev *tail.Event) string {
	line := ev.Line
	if len(line) > 200 {
		line = line[:200]
	}
	return ev.Path + ": " + string(line)
}

// promise handles Kafka's answer for one record.
func (k *Kafka) promise(r *kgo.Record, err error) {
	ev := r.Context.(*eventContext).ev
	select {
	case k.space <- struct{}{}:
	default:
	}
	if err == nil {
		k.produced.Inc()
		took := time.Since(r.Timestamp)
		k.hop.Acked(1, took)
		if k.cfg.Dye.Active() {
			if id := k.cfg.Dye.MatchLine(k.cfg.Host, ev.Path, ev.Line); id != "" {
				k.cfg.Dye.Hop(id, "send "+k.hop.To(), lineSummary(ev), took)
			}
		}
		ev.Done()
		return
	}
	if errors.Is(err, kgo.ErrClientClosed) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// Stopping: the event stays undelivered and is read again
		// after the restart.
		return
	}
	k.failed.Inc()
	k.hop.Failed()
	k.warn("kafka refused an event; producing it again", "topic", r.Topic, "err", err)
	k.retries.Add(1)
	go func() {
		defer k.retries.Done()
		select {
		case <-k.closing:
			return
		case <-time.After(k.cfg.RetryWait):
		}
		r.Partition, r.Offset = 0, 0
		k.client.Produce(k.prodCtx, r, k.onAck)
	}()

}

// warn logs at most once per 10 s.
func (k *Kafka) warn(msg string, args ...any) {
	k.logMu.Lock()
	defer k.logMu.Unlock()
	if time.Since(k.lastLog) < 10*time.Second {
		return
	}
	k.lastLog = time.Now()
	k.log.Warn(msg, args...)
}

// Flush does nothing: batches go out on their linger.
func (k *Kafka) Flush(context.Context) error { return nil }

// Close waits until what is buffered is acknowledged or ctx ends, then
// closes the client.
func (k *Kafka) Close(ctx context.Context) error {
	err := k.client.Flush(ctx)
	k.closeOnce.Do(func() { close(k.closing) })
	k.prodCancel()
	k.client.Close()
	k.retries.Wait()
	return err
}

// Buffered returns the records produced and not yet acknowledged.
func (k *Kafka) Buffered() int64 { return k.client.BufferedProduceRecords() }
