package ship

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opskit/opskit/collector/tail"
	"github.com/opskit/opskit/internal/testkit"
)

// TestMurmur2MatchesTheClientsPartitioner: the producer of a key is
// picked with the hash the client's partitioners put keys on partitions
// with, so that with partitions a multiple of the producers each
// partition has one producer.
func TestMurmur2MatchesTheClientsPartitioner(t *testing.T) {
	// Kafka's own test vectors for its murmur2 (as signed 32-bit values).
	for key, want := range map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	} {
		if got := int32(murmur2([]byte(key))); got != want {
			t.Errorf("murmur2(%q) = %d, want %d", key, got, want)
		}
	}
	partitioners := map[string]kgo.Partitioner{
		"sticky key":                  kgo.StickyKeyPartitioner(nil),
		"uniform bytes (the default)": kgo.UniformBytesPartitioner(64<<10, true, true, nil),
	}
	for name, partitioner := range partitioners {
		tp := partitioner.ForTopic("logs")
		partition := tp.Partition
		if bp, ok := tp.(kgo.TopicBackupPartitioner); ok {
			// The default partitioner; a keyed record needs no backup.
			partition = func(r *kgo.Record, n int) int { return bp.PartitionByBackup(r, n, nil) }
		}
		for i := range 500 {
			key := []byte(fmt.Sprintf("/var/log/app-%d/access.log", i))
			for _, n := range []int{1, 2, 3, 4, 6, 12} {
				if got, want := int(murmur2(key)&0x7fffffff)%n, partition(&kgo.Record{Key: key}, n); got != want {
					t.Fatalf("%s: key %q over %d partitions: murmur2 says %d, the partitioner %d", name, key, n, got, want)
				}
			}
		}
	}
}

// TestKafkaProducersKeepEachFilesOrder: two files keyed by path, their
// lines interleaved, go through different clients of the emitter; each
// file's lines arrive on one partition, from one producer, in order and
// without gaps, and every line is marked delivered.
func TestKafkaProducersKeepEachFilesOrder(t *testing.T) {
	const producers, partitions, lines = 2, 4, 3000
	// Two paths whose hashes pick different producers.
	var paths []string
	for i := 0; len(paths) < producers; i++ {
		path := fmt.Sprintf("/var/log/app-%d.log", i)
		if int(murmur2([]byte(path))&0x7fffffff)%producers == len(paths) {
			paths = append(paths, path)
		}
	}
	for _, format := range []string{FormatJSON, FormatLine} {
		t.Run(format, func(t *testing.T) {
			kc := testkit.Kafka(t, testkit.KafkaTopic("logs", partitions))
			k := newTestKafka(t, KafkaConfig{Brokers: kc.Addrs(), Host: "h", BatchBytes: 8 << 10, BufferBytes: 32 << 10,
				Linger: time.Millisecond, Format: format, Producers: producers}, nil)
			acks := newAckCounter(t)
			in := &tail.Input{Topic: "logs", Key: "path"}
			for i := range lines {
				ev := acks.event(in, paths[i%2], fmt.Sprintf("line %05d of a file %s", i/2, paths[i%2]))
				if err := k.Emit(context.Background(), ev); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "every line acknowledged", func() bool { return acks.done() == lines })

			type fileSeen struct {
				next       int
				partition  int32
				producerID int64
			}
			seen := map[string]*fileSeen{}
			for _, r := range kc.ReadTopic(t, "logs", lines, 10*time.Second) {
				m, err := DecodeRecord(r, nil)
				if err != nil {
					t.Fatal(err)
				}
				f := seen[m.Path]
				if f == nil {
					f = &fileSeen{partition: r.Partition, producerID: r.ProducerID}
					seen[m.Path] = f
				}
				if r.Partition != f.partition || r.ProducerID != f.producerID {
					t.Fatalf("%s: on partition %d by producer %d, and on %d by %d", m.Path, f.partition, f.producerID, r.Partition, r.ProducerID)
				}
				var n int
				if _, err := fmt.Sscanf(m.Line, "line %d", &n); err != nil || n != f.next {
					t.Fatalf("%s: line %q where line %d was due", m.Path, m.Line, f.next)
				}
				f.next++
			}
			if len(seen) != 2 {
				t.Fatalf("%d files seen, want 2", len(seen))
			}
			a, b := seen[paths[0]], seen[paths[1]]
			if a.producerID == b.producerID {
				t.Errorf("both files went through producer %d; want one client each", a.producerID)
			}
			for i, path := range paths {
				// partitions is a multiple of producers: a partition's
				// producer is its number modulo the producers.
				if got := int(seen[path].partition) % producers; got != i {
					t.Errorf("%s: partition %d, want one of producer %d's", path, seen[path].partition, i)
				}
			}
		})
	}
}

// TestKafkaProducersSpreadUnkeyedRecords: records without a key take the
// producers in turn, and all of them arrive and are marked delivered.
func TestKafkaProducersSpreadUnkeyedRecords(t *testing.T) {
	const lines = 2000
	kc := testkit.Kafka(t, testkit.KafkaTopic("logs", 3))
	k := newTestKafka(t, KafkaConfig{Brokers: kc.Addrs(), Host: "h", BatchBytes: 8 << 10, BufferBytes: 32 << 10,
		Linger: time.Millisecond, Producers: 3}, nil)
	acks := newAckCounter(t)
	in := &tail.Input{Topic: "logs", Key: "none"}
	for i := range lines {
		if err := k.Emit(context.Background(), acks.event(in, "/var/log/a.log", fmt.Sprintf("line %05d", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every line acknowledged", func() bool { return acks.done() == lines })
	producerIDs := map[int64]int{}
	for _, r := range kc.ReadTopic(t, "logs", lines, 10*time.Second) {
		producerIDs[r.ProducerID]++
	}
	if len(producerIDs) != 3 {
		t.Errorf("records by producer: %v, want all three producers", producerIDs)
	}
	if k.Buffered() != 0 {
		t.Errorf("%d records still buffered", k.Buffered())
	}
}

// newTestKafka returns a Kafka emitter counting into set (a new one when
// nil), closed at the test's end.
func newTestKafka(t *testing.T, cfg KafkaConfig, set *metrics.Set) *Kafka {
	t.Helper()
	if set == nil {
		set = metrics.NewSet()
	}
	k, err := NewKafka(cfg, set, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := k.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return k
}
