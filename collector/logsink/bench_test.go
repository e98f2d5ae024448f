package logsink

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/testkit"
)

// BenchmarkSinkRows measures rows per second from Kafka (kfake, in this
// process) into ClickHouse, decoding included. Run it once:
//
//	go test -run XXX -bench SinkRows -benchtime 1x ./collector/logsink
//
// SINK_BENCH_ROWS sets the rows (default 1,000,000).
func BenchmarkSinkRows(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("SINK_BENCH_ROWS")); err == nil && v > 0 {
		n = v
	}
	chs := testkit.SharedClickHouse(b)
	kc := testkit.Kafka(b, testkit.KafkaTopic("logs", 3))
	produce(b, kc, n, time.Now().Add(-time.Hour))
	cfg := Config{Brokers: kc.Addrs(), Topics: []string{"logs"}, Group: "bench", BatchRows: 100000, BatchWait: 200 * time.Millisecond,
		ClickHouse: ClickHouse{Addr: chs.NativeAddr(), Database: chs.Database(), Table: "logs"}}
	for b.Loop() {
		s, err := New(cfg, metrics.NewSet(), quiet)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		ctx, cancel := contextWithCancel()
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		for s.Inserted() < uint64(n) {
			time.Sleep(5 * time.Millisecond)
		}
		elapsed := time.Since(start)
		cancel()
		<-done
		b.ReportMetric(float64(n)/elapsed.Seconds(), "rows/s")
		cfg.Group += "x" // a new group reads everything again
	}
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
