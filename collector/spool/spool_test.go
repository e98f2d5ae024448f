package spool

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func rec(i int) Record {
	return Record{Points: i%5 + 1, Data: []byte(fmt.Sprintf("[batch %d %s]", i, strings.Repeat("x", i%50)))}
}

type drops struct {
	mu     sync.Mutex
	points map[string]int
}

func (d *drops) fn(n int, reason string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.points == nil {
		d.points = map[string]int{}
	}
	d.points[reason] += n
}

func (d *drops) get(reason string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.points[reason]
}

func mustOpen(t *testing.T, opts Options) *Spool {
	t.Helper()
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// drain peeks and acks until the spool is empty, returning the data in order.
func drain(t *testing.T, s *Spool, maxRecords int) []string {
	t.Helper()
	var out []string
	for {
		b, err := s.Peek(maxRecords, 1000)
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

func TestOrderAcrossSegmentsAndReopen(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, MaxBytes: 1 << 20, SegmentBytes: 300}
	s := mustOpen(t, opts)
	var want []string
	points := 0
	for i := range 40 {
		if err := s.Append(rec(i)); err != nil {
			t.Fatal(err)
		}
		want = append(want, string(rec(i).Data))
		points += rec(i).Points
	}
	st := s.Stats()
	if st.Records != 40 || st.Points != points || st.Segments < 3 {
		t.Fatalf("stats %+v, want 40 records, %d points, several segments", st, points)
	}
	// Read and acknowledge part, then reopen: the rest comes out in order.
	got := []string{}
	for range 4 {
		b, _ := s.Peek(3, 1000)
		for _, r := range b.Records {
			got = append(got, string(r.Data))
		}
		s.Ack(b)
	}
	// A peek that is not acknowledged is delivered again.
	if b, _ := s.Peek(2, 1000); string(b.Records[0].Data) != want[len(got)] {
		t.Fatalf("peek after %d acked = %s", len(got), b.Records[0].Data)
	}
	s.Close()
	s = mustOpen(t, opts)
	defer s.Close()
	got = append(got, drain(t, s, 7)...)
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("order after reopen:\n got %q\nwant %q", got, want)
	}
	if st := s.Stats(); st.Records != 0 || st.Points != 0 || st.Segments != 1 {
		t.Errorf("drained spool stats %+v", st)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 {
		t.Errorf("%d segment files left after draining, want 1", len(segs))
	}
	// Appends after a drain and a reopen continue.
	s.Append(rec(99))
	if got := drain(t, s, 10); len(got) != 1 || got[0] != string(rec(99).Data) {
		t.Errorf("after drain: %q", got)
	}
}

func TestPeekLimits(t *testing.T) {
	s := mustOpen(t, Options{Dir: t.TempDir()})
	defer s.Close()
	s.Append(Record{Points: 600, Data: []byte("a")}, Record{Points: 600, Data: []byte("b")}, Record{Points: 0, Data: []byte("skipped")})
	s.Append(Record{Points: 100, Data: []byte("c")})
	b, _ := s.Peek(10, 1000)
	if len(b.Records) != 1 || b.Points != 600 {
		t.Fatalf("maxPoints 1000: %d records, %d points; want only the first", len(b.Records), b.Points)
	}
	s.Ack(b)
	b, _ = s.Peek(10, 1000)
	if len(b.Records) != 2 || b.Points != 700 {
		t.Fatalf("second peek %d records %d points", len(b.Records), b.Points)
	}
	// The first record is taken even when it alone is over maxPoints.
	s.Append(Record{Points: 5000, Data: []byte("big")})
	s.Ack(b)
	if b, _ := s.Peek(10, 1000); len(b.Records) != 1 || b.Points != 5000 {
		t.Fatalf("big record: %+v", b)
	}
}

func TestBoundDropsOldest(t *testing.T) {
	var d drops
	opts := Options{Dir: t.TempDir(), MaxBytes: 2000, SegmentBytes: 500, OnDrop: d.fn}
	s := mustOpen(t, opts)
	defer s.Close()
	total := 0
	for i := range 200 {
		if err := s.Append(rec(i)); err != nil {
			t.Fatal(err)
		}
		total += rec(i).Points
	}
	st := s.Stats()
	if st.Bytes > opts.MaxBytes {
		t.Errorf("spool holds %d bytes, over its bound %d", st.Bytes, opts.MaxBytes)
	}
	if d.get("spool_full")+st.Points != total {
		t.Errorf("dropped %d + kept %d != written %d", d.get("spool_full"), st.Points, total)
	}
	got := drain(t, s, 50)
	if len(got) == 0 || got[len(got)-1] != string(rec(199).Data) {
		t.Fatalf("the newest record is not kept: %q", got)
	}
	// What is kept is a contiguous, ordered tail.
	first, _ := strconv.Atoi(strings.Fields(got[0])[1])
	for i, g := range got {
		if g != string(rec(first+i).Data) {
			t.Fatalf("record %d = %s, want batch %d", i, g, first+i)
		}
	}
	// The bound is on compressed bytes: random data does not compress.
	big := make([]byte, 5000)
	rand.NewChaCha8([32]byte{1}).Read(big)
	if err := s.Append(Record{Points: 3, Data: big}); err == nil || d.get("too_large") != 3 {
		t.Errorf("a record over the whole bound: err %v, too_large drops %d", err, d.get("too_large"))
	}
}

func TestTornTailIsCut(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, Options{Dir: dir})
	for i := range 5 {
		s.Append(rec(i))
	}
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	fi, _ := os.Stat(segs[0])
	// Half a record more, as a crash mid-write leaves it.
	f, _ := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	f.Write(appendRecord(nil, rec(5))[:10])
	f.Close()
	s = mustOpen(t, Options{Dir: dir})
	defer s.Close()
	if fi2, _ := os.Stat(segs[0]); fi2.Size() != fi.Size() {
		t.Errorf("torn tail not cut: %d bytes, want %d", fi2.Size(), fi.Size())
	}
	s.Append(rec(6))
	got := drain(t, s, 100)
	if len(got) != 6 || got[5] != string(rec(6).Data) {
		t.Errorf("after a torn tail: %q", got)
	}
}

func TestCorruptRecordDoesNotStall(t *testing.T) {
	var d drops
	dir := t.TempDir()
	s := mustOpen(t, Options{Dir: dir, OnDrop: d.fn})
	for i := range 3 {
		s.Append(rec(i))
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	b, _ := os.ReadFile(segs[0])
	first := len(appendRecord(nil, rec(0)))
	b[first+headerSize+1] ^= 0xff // damage the second record's payload
	os.WriteFile(segs[0], b, 0o644)
	got := drain(t, s, 100)
	if len(got) != 1 || d.get("corrupt") != rec(1).Points+rec(2).Points {
		t.Errorf("got %q, corrupt drops %d", got, d.get("corrupt"))
	}
	s.Append(rec(7))
	s.Close()
}

// TestKillNineKeepsAppended runs a child process that appends records and
// reports each one Append returned for; it is killed with SIGKILL mid-way,
// and every reported record must be in the reopened spool, in order.
func TestKillNineKeepsAppended(t *testing.T) {
	if dir := os.Getenv("SPOOL_TEST_CHILD_DIR"); dir != "" {
		s, err := Open(Options{Dir: dir, SegmentBytes: 4096})
		if err != nil {
			fmt.Println("open:", err)
			os.Exit(1)
		}
		for i := 0; ; i++ {
			if err := s.Append(rec(i)); err != nil {
				fmt.Println("append:", err)
				os.Exit(1)
			}
			fmt.Println(i)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillNineKeepsAppended$")
	cmd.Env = append(os.Environ(), "SPOOL_TEST_CHILD_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	acked := -1
	deadline := time.Now().Add(10 * time.Second)
	for sc.Scan() {
		n, err := strconv.Atoi(sc.Text())
		if err != nil {
			t.Fatalf("child: %s", sc.Text())
		}
		acked = n
		if acked >= 300 || time.Now().After(deadline) {
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if acked < 10 {
		t.Fatalf("child acknowledged only %d records", acked)
	}
	s := mustOpen(t, Options{Dir: dir, SegmentBytes: 4096})
	defer s.Close()
	got := drain(t, s, 64)
	if len(got) < acked+1 {
		t.Fatalf("%d records after kill -9, but %d were acknowledged", len(got), acked+1)
	}
	for i, g := range got {
		if g != string(rec(i).Data) {
			t.Fatalf("record %d = %q", i, g)
		}
	}
}
