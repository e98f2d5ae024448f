package ship

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// BatchBytes bounds one record batch (default DefaultBatchBytes). A
	// line whose event is larger is cut to fit and marked truncated.
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
	// Format is the record's form: "json" (default), one JSON event per
	// record, or "line", the line's bytes as the value with the event's
	// metadata in record headers (see LineHeaders).
	Format string
	// Producers is the number of Kafka clients records are spread over
	// (default 1). The client compresses a broker's batches on one
	// goroutine, so one client compresses on one core; more clients
	// compress on more. A key always takes the same client (and so the
	// same partition, in order); records without a key take the clients
	// in turn, a batch's worth each.
	Producers int
}

// DefaultBatchBytes bounds a record batch unless configured. Measured on
// a 1 GiB file (bench/RESULTS.md), 512 KiB batches shipped 8–40 % faster
// than 1 MiB ones at 8–26 % less CPU per GiB and with less memory: more of
// them fit in the buffer in flight, so compressing and sending overlap
// better. Events larger than a batch are cut.
const DefaultBatchBytes = 512 << 10

// Record formats.
const (
	FormatJSON = "json"
	FormatLine = "line"
)

// Headers of a record in the line format. The record's timestamp is the
// line's read time; "truncated" is present only for a cut line and
// "fields" only for an input with fields (a JSON object).
const (
	HeaderHost      = "host"
	HeaderPath      = "path"
	HeaderFile      = "file"
	HeaderOffset    = "offset"
	HeaderTruncated = "truncated"
	HeaderFields    = "fields"
)

// Kafka produces events to the topics of their inputs.
type Kafka struct {
	cfg       KafkaConfig
	producers []*producer
	enc       *Encoder
	log       *slog.Logger
	// unkeyed is the producer records without a key go to, and
	// unkeyedBytes what it took since it was picked.
	unkeyed      int
	unkeyedBytes int64

	produced, failed *metrics.Counter
	// cut counts lines cut so that their event fits a record batch.
	cut *metrics.Counter
	// hop counts lines Kafka acknowledged, with their latency from the
	// line's reading (waits for buffer space included), under
	// to="kafka://FIRSTBROKER".
	hop *hop.Hop
	// slab is the one records and values are taken from (Emit is called
	// from one goroutine); free holds slabs whose records Kafka has all
	// answered, for reuse, so that shipping allocates next to nothing.
	slab *slab
	free chan *slab
	// slabValBytes holds about slabRecords values of short lines: the
	// line format's values are about half the JSON events'.
	slabValBytes int
	// The last record key and its bytes, shared by the records that
	// have the same key.
	lastKey      string
	lastKeyBytes []byte
	// The line format's header values that repeat from record to record.
	hostBytes []byte
	lastPath  string
	pathBytes []byte
	lastFile  string
	fileBytes []byte
	// space is signalled when a record leaves the buffer while waiting
	// says Emit waits for it.
	space     chan struct{}
	waitTimer *time.Timer
	waiting   atomic.Bool
	_         [64]byte // buffered, written by both sides, on a line of its own
	// buffered counts the bytes of the records produced and not yet
	// answered, as the client counts them.
	buffered atomic.Int64
	_        [64]byte
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

// producer is one Kafka client and the state of its promises, which the
// client calls one at a time (each client on its own goroutine).
type producer struct {
	client *kgo.Client
	// onAck is the promise bound to this producer, once.
	onAck func(*kgo.Record, error)
	// The acknowledgement clock and the acknowledgements not yet counted
	// in the metrics.
	ackNow, ackReadAt time.Time
	ackedSince        int
	ackCount          int
	ackLatency        time.Duration
	// acked holds the receipts of records acknowledged and not yet handed
	// to the tailer, which takes them a few at a time under one lock.
	acked []tail.Receipt
	// inFlight counts the records produced by this client and not yet
	// answered, kept only when there are several clients.
	inFlight atomic.Int64
	_        [64]byte // each producer's promises write their own line
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
		cfg.BatchBytes = DefaultBatchBytes
	}
	if cfg.BufferBytes <= 0 {
		cfg.BufferBytes = 4 << 20
	}
	if cfg.RetryWait <= 0 {
		cfg.RetryWait = time.Second
	}
	switch cfg.Format {
	case "":
		cfg.Format = FormatJSON
	case FormatJSON, FormatLine:
	default:
		return nil, fmt.Errorf("kafka: format %q: want json or line", cfg.Format)
	}
	if cfg.Producers <= 0 {
		cfg.Producers = 1
	}
	compression := kgo.ProducerBatchCompression(c)
	if strings.ToLower(cfg.Compression) == "zstd" || cfg.Compression == "" {
		compression = kgo.WithCompressor(newZstdCompressor())
	}
	producers := make([]*producer, cfg.Producers)
	for i := range producers {
		client, err := kgo.NewClient(
			kgo.SeedBrokers(cfg.Brokers...),
			compression,
			kgo.ProducerLinger(cfg.Linger),
			kgo.ProducerBatchMaxBytes(cfg.BatchBytes),
			// Emit waits below BufferBytes, counted over every client;
			// the margin keeps Produce itself from blocking.
			kgo.MaxBufferedBytes(cfg.BufferBytes+2*int(cfg.BatchBytes)),
			kgo.MaxBufferedRecords(1<<20),
			kgo.RequiredAcks(kgo.AllISRAcks()),
			// Retries without end: an outage is waited out with the
			// buffer full and reading paused.
			kgo.RecordRetries(1<<30),
		)
		if err != nil {
			for _, p := range producers[:i] {
				p.client.Close()
			}
			return nil, fmt.Errorf("kafka: %w", err)
		}
		producers[i] = &producer{client: client}
	}
	if set == nil {
		set = metrics.NewSet()
	}
	prodCtx, prodCancel := context.WithCancel(context.Background())
	k := &Kafka{cfg: cfg, producers: producers, log: log, closing: make(chan struct{}),
		space: make(chan struct{}, 1), prodCtx: prodCtx, prodCancel: prodCancel,
		free: make(chan *slab, maxFreeSlabs), hostBytes: []byte(cfg.Host), slabValBytes: 96 << 10,
		enc:      &Encoder{Host: cfg.Host, InvalidUTF8: set.GetOrCreateCounter("opskit_collector_logs_invalid_utf8_lines_total")},
		produced: set.GetOrCreateCounter("opskit_collector_logs_kafka_acked_events_total"),
		hop:      hop.New(set, hop.KafkaAddr(cfg.Brokers)),
		failed:   set.GetOrCreateCounter("opskit_collector_logs_kafka_failed_events_total"),
		cut:      set.GetOrCreateCounter("opskit_collector_logs_kafka_cut_lines_total"),
	}
	if cfg.Format == FormatLine {
		k.slabValBytes = 48 << 10
	}
	for _, p := range producers {
		p.onAck = func(r *kgo.Record, err error) { k.promise(p, r, err) }
	}
	return k, nil
}

// Key returns the record key of ev by its input's key rule.
func Key(ev *tail.Event, host string) []byte {
	key, ok := keyOf(ev, host)
	if !ok {
		return nil
	}
	return []byte(key)
}

// keyOf returns the record key of ev by its input's key rule, and false
// for none.
func keyOf(ev *tail.Event, host string) (string, bool) {
	if ev.Input == nil {
		return ev.Path, true
	}
	switch k := ev.Input.Key; {
	case k == "host":
		return host, true
	case k == "none":
		return "", false
	case strings.HasPrefix(k, "field:"):
		return ev.Input.Fields[k[len("field:"):]], true
	}
	return ev.Path, true
}

// key returns ev's record key as Key does, reusing the previous record's
// key bytes while the key stays the same (one file's lines, or one host's):
// a key copied for every record was an allocation a line. Records only
// read their keys, so they can share them.
func (k *Kafka) key(ev *tail.Event) []byte {
	key, ok := keyOf(ev, k.cfg.Host)
	if !ok {
		return nil
	}
	if k.lastKeyBytes == nil || key != k.lastKey {
		k.lastKey, k.lastKeyBytes = key, []byte(key)
	}
	return k.lastKeyBytes
}

// Emit produces ev; it blocks while the buffer is full.
func (k *Kafka) Emit(ctx context.Context, ev *tail.Event) error {
	topic := ""
	if ev.Input != nil {
		topic = ev.Input.Topic
	}
	key := k.key(ev)
	limit := int(k.cfg.BatchBytes) - recordOverhead - len(key)
	var shipped *shippedRecord
	var value []byte
	if k.cfg.Format == FormatLine {
		shipped, value = k.lineRecord(ev, limit)
	} else {
		shipped, value = k.jsonRecord(ev, limit)
	}
	// The tailer reuses ev: the record keeps its receipt for the promise.
	shipped.ctx = eventContext{Context: k.prodCtx, receipt: ev.Receipt(), slab: shipped.ctx.slab}
	// The record's time is the line's read time, shared by the lines of
	// one read, which spares the client a clock reading per record.
	shipped.rec = kgo.Record{Topic: topic, Key: key, Value: value, Headers: shipped.rec.Headers,
		Timestamp: ev.Time, Context: &shipped.ctx}
	// The client's own count of buffered bytes is under a lock that its
	// promises take too: the emitter keeps its own, counted alike.
	size := recordSize(&shipped.rec)
	if k.buffered.Load() >= int64(k.cfg.BufferBytes) {
		if err := k.waitForSpace(ctx); err != nil {
			k.release(shipped.ctx.slab) // never produced
			return err
		}
	}
	if k.cfg.Dye.Active() {
		if id := k.cfg.Dye.MatchLine(k.cfg.Host, ev.Path, ev.Line); id != "" {
			// Kept for the acknowledgement, when the line is gone.
			shipped.ctx.dyed = &dyedLine{id: id, summary: lineSummary(ev)}
			k.cfg.Dye.Hop(id, "intake", shipped.ctx.dyed.summary, time.Since(ev.Time))
		}
	}
	k.buffered.Add(size)
	p := k.producerFor(key, size)
	if len(k.producers) > 1 {
		p.inFlight.Add(1)
	}
	p.client.Produce(k.prodCtx, &shipped.rec, p.onAck)
	return nil
}

// producerFor picks the producer of a record: by its key's hash, so that
// a key's records keep their order (one client, and that client's
// partitioner puts one key on one partition); without a key, the next
// producer once this one took a batch's worth, so that each fills whole
// batches.
func (k *Kafka) producerFor(key []byte, size int64) *producer {
	n := len(k.producers)
	if n == 1 {
		return k.producers[0]
	}
	if key != nil {
		// The hash the client's partitioner uses on keys: when the
		// topic's partitions are a multiple of the producers, each
		// partition is written by one producer only.
		return k.producers[int(murmur2(key)&0x7fffffff)%n]
	}
	k.unkeyedBytes += size
	if k.unkeyedBytes >= int64(k.cfg.BatchBytes) {
		k.unkeyedBytes = 0
		k.unkeyed = (k.unkeyed + 1) % n
	}
	return k.producers[k.unkeyed]
}

// murmur2 is Kafka's key hash (MurmurHash2, seed 0x9747b28c), which
// franz-go's default partitioner applies to keyed records like the Java
// client's.
func murmur2(b []byte) uint32 {
	const (
		seed = 0x9747b28c
		m    = 0x5bd1e995
		r    = 24
	)
	h := uint32(seed) ^ uint32(len(b))
	for ; len(b) >= 4; b = b[4:] {
		w := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		w *= m
		w ^= w >> r
		w *= m
		h = h*m ^ w
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// waitForSpace waits until the records buffered take no more than three
// quarters of BufferBytes: reading then goes on for a while rather than
// waking for every record acknowledged.
func (k *Kafka) waitForSpace(ctx context.Context) error {
	// Promises signal space only while the flag is up (it is written
	// here only, so the promises' reads of it stay cheap); the timeout
	// covers a signal sent between a check and the flag.
	k.waiting.Store(true)
	defer k.waiting.Store(false)
	if k.waitTimer == nil {
		k.waitTimer = time.NewTimer(time.Hour)
	}
	for k.buffered.Load() > k.resumeAt() {
		k.waitTimer.Reset(100 * time.Millisecond)
		select {
		case <-k.space:
		case <-ctx.Done():
			return ctx.Err()
		case <-k.waitTimer.C:
		}
	}
	k.waitTimer.Stop()
	return nil
}

// resumeAt is the buffered bytes at which a full buffer takes records
// again.
func (k *Kafka) resumeAt() int64 { return int64(k.cfg.BufferBytes) * 3 / 4 }

// recordSize is a record's size as the client counts it against
// MaxBufferedBytes.
func recordSize(r *kgo.Record) int64 {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return int64(n)
}

// ackClock returns the time of an acknowledgement of a record read at
// readAt. Promises come one after another, a batch's in a burst, and a
// clock reading per record was a noticeable share of the CPU: the clock is
// read again when the read time changes or every ackClockEvery records, so
// the latency of at most that many lines of one read is measured from
// the first one's acknowledgement.
func (p *producer) ackClock(readAt time.Time) time.Time {
	if p.ackedSince >= ackClockEvery || !readAt.Equal(p.ackReadAt) {
		p.ackNow, p.ackReadAt, p.ackedSince = time.Now(), readAt, 0
	}
	p.ackedSince++
	return p.ackNow
}

const ackClockEvery = 16

// jsonRecord takes a record from the slab with ev's JSON event as its
// value, cut to fit within limit bytes.
func (k *Kafka) jsonRecord(ev *tail.Event, limit int) (*shippedRecord, []byte) {
	size := k.enc.Size(ev)
	shipped, buf := k.take(size)
	shipped.rec.Headers = nil
	value := k.enc.Append(buf, ev)
	if len(value) > limit {
		// The client refuses a record larger than a batch, and would
		// refuse it again on every retry: the line is cut to fit.
		value = k.fit(ev, limit)
	}
	return shipped, value
}

// lineRecord takes a record from the slab with ev's line as its value and
// its metadata in headers; a line too long for a batch is cut to fit.
func (k *Kafka) lineRecord(ev *tail.Event, limit int) (*shippedRecord, []byte) {
	if ev.Path != k.lastPath || k.pathBytes == nil {
		k.lastPath, k.pathBytes = ev.Path, []byte(ev.Path)
	}
	if ev.FileID != k.lastFile || k.fileBytes == nil {
		k.lastFile, k.fileBytes = ev.FileID, []byte(ev.FileID)
	}
	var fields []byte
	if ev.Input != nil && len(ev.Input.Fields) > 0 {
		fields = k.enc.encodedFields(ev.Input)[len(`,"fields":`):]
	}
	headerBytes := len(k.hostBytes) + len(k.pathBytes) + len(k.fileBytes) + len(fields) + 64
	line, truncated := ev.Line, ev.Truncated
	if room := limit - headerBytes; len(line) > room {
		k.cut.Inc()
		k.warn("a line is larger than --kafka-batch-bytes; cutting it", "path", ev.Path, "offset", ev.Offset)
		line, truncated = line[:max(room, 0)], true
	}
	shipped, buf := k.take(len(line) + 20)
	value := append(buf, line...)
	offset := strconv.AppendInt(value[len(value):len(value)], ev.Offset, 10)
	s, n := shipped.ctx.slab, 4
	if truncated {
		n++
	}
	if fields != nil {
		n++
	}
	var h []kgo.RecordHeader
	if s.hdrs == nil {
		s.hdrs = make([]kgo.RecordHeader, 0, slabHeaders)
	}
	if cap(s.hdrs)-len(s.hdrs) >= n {
		h = s.hdrs[len(s.hdrs) : len(s.hdrs) : len(s.hdrs)+n]
		s.hdrs = s.hdrs[:len(s.hdrs)+n]
	} else {
		h = make([]kgo.RecordHeader, 0, n)
	}
	h = append(h,
		kgo.RecordHeader{Key: HeaderHost, Value: k.hostBytes},
		kgo.RecordHeader{Key: HeaderPath, Value: k.pathBytes},
		kgo.RecordHeader{Key: HeaderFile, Value: k.fileBytes},
		kgo.RecordHeader{Key: HeaderOffset, Value: offset})
	if truncated {
		h = append(h, kgo.RecordHeader{Key: HeaderTruncated, Value: trueBytes})
	}
	if fields != nil {
		h = append(h, kgo.RecordHeader{Key: HeaderFields, Value: fields})
	}
	shipped.rec.Headers = h
	return shipped, value
}

var trueBytes = []byte("true")

// slab holds records and their values. It is reused once Kafka has
// answered for every record taken from it.
type slab struct {
	recs []shippedRecord
	vals []byte
	// hdrs holds the records' headers (line format only).
	hdrs []kgo.RecordHeader
	// refs counts the records taken and not yet answered, plus one while
	// the slab is the one records are taken from.
	refs atomic.Int32
}

const (
	slabRecords = 256
	// slabHeaders has room for four headers a record and some more (a
	// record whose headers do not fit gets its own).
	slabHeaders = slabRecords * 9 / 2
	// maxFreeSlabs bounds the slabs kept for reuse (about 20 MiB of
	// records and values at most, far above what the buffer holds).
	maxFreeSlabs = 128
)

// take returns a record from the current slab and an empty buffer of at
// least size bytes for its value, from the slab when it has room.
func (k *Kafka) take(size int) (*shippedRecord, []byte) {
	s := k.slab
	fits := size <= k.slabValBytes/4
	if s == nil || len(s.recs) == cap(s.recs) || fits && cap(s.vals)-len(s.vals) < size {
		if s != nil {
			k.release(s)
		}
		select {
		case s = <-k.free:
		default:
			s = &slab{recs: make([]shippedRecord, 0, slabRecords), vals: make([]byte, 0, k.slabValBytes)}
		}
		s.refs.Store(1)
		k.slab = s
	}
	s.recs = s.recs[:len(s.recs)+1]
	shipped := &s.recs[len(s.recs)-1]
	shipped.ctx.slab = s
	s.refs.Add(1)
	if !fits {
		// A long line: its own buffer, not a slab's worth.
		return shipped, make([]byte, 0, size)
	}
	// The value's capacity is its own room: appending past it reallocates
	// rather than running into the next record's value.
	start := len(s.vals)
	s.vals = s.vals[:start+size]
	return shipped, s.vals[start : start : start+size]
}

// release drops a reference to s, and keeps it for reuse once none is
// left.
func (k *Kafka) release(s *slab) {
	if s.refs.Add(-1) != 0 {
		return
	}
	clear(s.recs) // drop the events and values for the collector
	clear(s.hdrs)
	s.recs, s.vals, s.hdrs = s.recs[:0], s.vals[:0], s.hdrs[:0]
	select {
	case k.free <- s:
	default:
	}
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

// shippedRecord is a record and the event it carries, allocated together
// in a slab.
type shippedRecord struct {
	rec kgo.Record
	ctx eventContext
}

// eventContext is a record's context (the producer's) carrying its event
// to the promise, so that one promise function serves every record rather
// than a closure allocated per record.
type eventContext struct {
	context.Context
	receipt tail.Receipt
	slab    *slab
	dyed    *dyedLine
}

// dyedLine is a dyed line's trace id and summary, taken at intake (the
// line's bytes are gone by the acknowledgement).
type dyedLine struct{ id, summary string }

// lineSummary describes a log line in a trace record.
func lineSummary(ev *tail.Event) string {
	line := ev.Line
	if len(line) > 200 {
		line = line[:200]
	}
	return ev.Path + ": " + string(line)
}

// promise handles Kafka's answer for one record produced by p.
func (k *Kafka) promise(p *producer, r *kgo.Record, err error) {
	ctx := r.Context.(*eventContext)
	if err == nil {
		left := k.buffered.Add(-recordSize(r))
		if left <= k.resumeAt() && k.waiting.Load() {
			select {
			case k.space <- struct{}{}:
			default:
			}
		}
		took := p.ackClock(r.Timestamp).Sub(r.Timestamp)
		// The counters are updated every few records (their float
		// counter takes a lock), and whenever this producer has nothing
		// left in flight, so that they are exact once Kafka has answered
		// for everything.
		p.ackCount++
		p.ackLatency += took
		idle := left == 0
		if len(k.producers) > 1 {
			idle = p.inFlight.Add(-1) == 0
		}
		if ctx.dyed != nil {
			k.cfg.Dye.Hop(ctx.dyed.id, "send "+k.hop.To(), ctx.dyed.summary, took)
		}
		// The receipts too are handed over every few records, and
		// whenever nothing is left in flight: a later answer, or this
		// one, always hands over what is held.
		p.acked = append(p.acked, ctx.receipt)
		if p.ackCount >= ackClockEvery || idle {
			k.produced.Add(p.ackCount)
			k.hop.Acked(p.ackCount, p.ackLatency)
			p.ackCount, p.ackLatency = 0, 0
			p.handOver()
		}
		// The record is Kafka's no more: its slab may be reused.
		k.release(ctx.slab)
		return
	}
	// A failed record leaves the ones acknowledged before it held: they
	// are handed over now.
	p.handOver()
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
		// The same producer: the key keeps its one client.
		p.client.Produce(k.prodCtx, r, p.onAck)
	}()

}

// handOver marks the held receipts done. Only p's promises call it, one
// at a time.
func (p *producer) handOver() {
	if len(p.acked) == 0 {
		return
	}
	tail.DoneAll(p.acked)
	clear(p.acked) // they point to the tailer's streams
	p.acked = p.acked[:0]
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
	errs := make([]error, len(k.producers))
	var flushes sync.WaitGroup
	for i, p := range k.producers {
		flushes.Go(func() { errs[i] = p.client.Flush(ctx) })
	}
	flushes.Wait()
	k.closeOnce.Do(func() { close(k.closing) })
	k.prodCancel()
	for _, p := range k.producers {
		p.client.Close()
	}
	k.retries.Wait()
	return errors.Join(errs...)
}

// Buffered returns the records produced and not yet acknowledged.
func (k *Kafka) Buffered() int64 {
	var n int64
	for _, p := range k.producers {
		n += p.client.BufferedProduceRecords()
	}
	return n
}
