package spool

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func rec(i int) Record { return Record{Count: 1, Data: []byte(fmt.Sprintf("record-%06d", i))} }

func drain(t *testing.T, s *Spool, maxRecords int) []string {
	t.Helper()
	var out []string
	for {
		b, err := s.Peek(maxRecords, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Records) == 0 {
			return out
		}
		for _, r := range b.Records {
			out = append(out, string(r.Data))
		}
		if err := s.Ack(b); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOrderAckAndReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(Options{Dir: dir, MaxBytes: 1 << 20, SegmentBytes: 200})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if err := s.Append(ctx, rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Records != 50 || st.Count != 50 || st.Segments < 5 {
		t.Fatalf("stats %+v", st)
	}
	// Deliver 20 and acknowledge them; peek 5 more without acknowledging.
	got := 0
	for got < 20 {
		b, err := s.Peek(4, 100)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range b.Records {
			if want := string(rec(got + i).Data); string(r.Data) != want {
				t.Fatalf("record %d = %q; want %q", got+i, r.Data, want)
			}
		}
		got += len(b.Records)
		s.Ack(b)
	}
	if b, _ := s.Peek(5, 100); len(b.Records) == 0 {
		t.Fatal("nothing left to peek")
	}
	s.Close()

	s, err = Open(Options{Dir: dir, MaxBytes: 1 << 20, SegmentBytes: 200})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rest := drain(t, s, 7)
	if len(rest) != 30 || rest[0] != "record-000020" || rest[29] != "record-000049" {
		t.Fatalf("after reopen got %d records %v", len(rest), rest)
	}
	if st := s.Stats(); st.Records != 0 || st.Segments != 1 {
		t.Fatalf("drained stats %+v", st)
	}
	// Acknowledged segments are deleted.
	segs, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if len(segs) != 1 {
		t.Fatalf("segments left: %v", segs)
	}
}

func TestPeekBoundsByCount(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	s.Append(ctx, Record{Count: 600, Data: []byte("a")}, Record{Count: 600, Data: []byte("b")}, Record{Count: 10, Data: []byte("c")})
	tests := []struct {
		maxRecords, maxCount int
		want                 int
	}{
		{10, 1000, 1}, // the second would pass maxCount
		{10, 100, 1},  // the first is always returned
		{10, 1300, 3},
		{2, 1300, 2},
	}
	for _, tc := range tests {
		b, err := s.Peek(tc.maxRecords, tc.maxCount)
		if err != nil || len(b.Records) != tc.want {
			t.Errorf("Peek(%d, %d) = %d records, %v; want %d", tc.maxRecords, tc.maxCount, len(b.Records), err, tc.want)
		}
	}
}

func TestBoundDropsOldestAndCounts(t *testing.T) {
	var mu sync.Mutex
	dropped := map[string]int{}
	s, err := Open(Options{Dir: t.TempDir(), MaxBytes: 1000, SegmentBytes: 250, OnDrop: func(records, count int, reason string) {
		mu.Lock()
		dropped[reason] += count
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < 200; i++ {
		if err := s.Append(context.Background(), rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	if st.Bytes > 1000 {
		t.Fatalf("spool holds %d bytes over its bound", st.Bytes)
	}
	got := drain(t, s, 100)
	if len(got)+dropped[DropFull] != 200 {
		t.Fatalf("kept %d + dropped %d != 200 appended", len(got), dropped[DropFull])
	}
	if got[len(got)-1] != "record-000199" {
		t.Fatalf("the newest record was not kept: %v", got[len(got)-1])
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("out of order: %s after %s", got[i], got[i-1])
		}
	}
	if err := s.Append(context.Background(), Record{Count: 7, Data: make([]byte, 2000)}); err == nil || dropped[DropTooBig] != 7 {
		t.Fatalf("oversized append: %v, dropped %v", err, dropped)
	}
}

func TestTornTailIsCutAndDamageCounted(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, SegmentBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		s.Append(context.Background(), rec(i))
	}
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	// A torn write at the end of the newest segment.
	newest := segs[len(segs)-1]
	f, _ := os.OpenFile(newest, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(AppendRecord(nil, rec(999))[:15])
	f.Close()
	// Damage in an older segment.
	data, _ := os.ReadFile(segs[0])
	data[len(data)-1] ^= 0xff
	os.WriteFile(segs[0], data, 0o640)

	var corrupt int
	s, err = Open(Options{Dir: dir, SegmentBytes: 100, OnDrop: func(_, _ int, reason string) {
		if reason == DropCorrupt {
			corrupt++
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := drain(t, s, 100)
	if corrupt == 0 {
		t.Error("damage in an older segment was not reported")
	}
	if len(got) < 15 || got[len(got)-1] != "record-000019" || slicesContain(got, "record-000999") {
		t.Fatalf("after repair: %v", got)
	}
	// Appending after the cut tail still works.
	s.Append(context.Background(), rec(20))
	if got := drain(t, s, 100); len(got) != 1 || got[0] != "record-000020" {
		t.Fatalf("append after repair: %v", got)
	}
}

func slicesContain(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestConcurrentAppendsShareSyncs(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir(), SegmentBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const writers, each = 8, 100
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := s.Append(context.Background(), Record{Count: 1, Data: []byte(fmt.Sprintf("%d %d", w, i))}); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	got := map[int]int{} // writer -> next expected i
	var wait sync.WaitGroup
	wait.Add(1)
	go func() { defer wait.Done(); wg.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n := 0
	for n < writers*each {
		if err := s.Wait(ctx); err != nil {
			t.Fatalf("after %d records: %v", n, err)
		}
		b, err := s.Peek(50, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range b.Records {
			var w, i int
			fmt.Sscanf(string(r.Data), "%d %d", &w, &i)
			if i != got[w] {
				t.Fatalf("writer %d: record %d after %d", w, i, got[w]-1)
			}
			got[w]++
			n++
		}
		s.Ack(b)
	}
	wait.Wait()
}

// TestKill9KeepsAppended appends from a child process that prints each
// acknowledged record, kills it with SIGKILL mid-stream and checks that
// every acknowledged record is in the spool, in order.
func TestKill9KeepsAppended(t *testing.T) {
	if dir := os.Getenv("SPOOL_KILL9_CHILD"); dir != "" {
		s, err := Open(Options{Dir: dir, SegmentBytes: 8 << 10})
		if err != nil {
			fmt.Println("open:", err)
			os.Exit(1)
		}
		out := bufio.NewWriter(os.Stdout)
		for i := 0; ; i++ {
			if err := s.Append(context.Background(), rec(i)); err != nil {
				fmt.Println("append:", err)
				os.Exit(1)
			}
			fmt.Fprintln(out, i)
			out.Flush()
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9KeepsAppended$")
	cmd.Env = append(os.Environ(), "SPOOL_KILL9_CHILD="+dir)
	stdout := &lockedBuffer{}
	cmd.Stdout = stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Count(stdout.String(), "\n") > 300 {
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	lines := strings.Fields(stdout.String())
	acked := -1
	for _, l := range lines {
		if n, err := strconv.Atoi(l); err == nil {
			acked = n
		}
	}
	if acked < 100 {
		t.Fatalf("child acknowledged only %d records: %q", acked, stdout.String())
	}
	s, err := Open(Options{Dir: dir, SegmentBytes: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := drain(t, s, 1000)
	if len(got) <= acked {
		t.Fatalf("spool holds %d records; %d were acknowledged", len(got), acked+1)
	}
	for i := 0; i <= acked; i++ {
		if got[i] != string(rec(i).Data) {
			t.Fatalf("record %d = %q", i, got[i])
		}
	}
	t.Logf("%d acknowledged records survived SIGKILL (%d on disk)", acked+1, len(got))
}

// lockedBuffer is a bytes.Buffer safe to read while a child writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestAckRecord(t *testing.T) {
	for _, p := range []Position{{1, 0}, {42, 123456}, {1<<63 + 5, 1<<62 + 7}} {
		got, ok := parseAck(formatAck(p))
		if !ok || got != p {
			t.Errorf("round trip of %+v: %+v, %v", p, got, ok)
		}
	}
	b := formatAck(Position{3, 99})
	b[5] ^= 1
	if _, ok := parseAck(b); ok {
		t.Error("a damaged ack record parsed")
	}
	if _, ok := parseAck([]byte("3 99\n")); ok {
		t.Error("a short ack record parsed")
	}
}

// BenchmarkAppendConcurrent measures appends of 10 KiB records from 8
// goroutines: concurrent appends share an fsync.
func BenchmarkAppendConcurrent(b *testing.B) {
	s, err := Open(Options{Dir: b.TempDir(), MaxBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rec := Record{Count: 1000, Data: make([]byte, 10<<10)}
	b.SetBytes(int64(len(rec.Data)))
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Append(context.Background(), rec); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPeekAck measures reading back and acknowledging batches of 64
// records.
func BenchmarkPeekAck(b *testing.B) {
	s, err := Open(Options{Dir: b.TempDir(), MaxBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rec := Record{Count: 100, Data: make([]byte, 1<<10)}
	recs := make([]Record, 64)
	for i := range recs {
		recs[i] = rec
	}
	b.SetBytes(int64(len(recs) * len(rec.Data)))
	for b.Loop() {
		b.StopTimer()
		s.Append(context.Background(), recs...)
		b.StartTimer()
		batch, err := s.Peek(64, 1<<20)
		if err != nil || len(batch.Records) != 64 {
			b.Fatalf("peek: %d records, %v", len(batch.Records), err)
		}
		if err := s.Ack(batch); err != nil {
			b.Fatal(err)
		}
	}
}
