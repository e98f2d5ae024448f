package store

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opskit/opskit/abtest/events"
)

func exposure(exp, unit, variant string) events.Event {
	return events.Event{Kind: events.Exposure, Unit: unit, Experiment: exp, Variant: variant, Time: time.Unix(1700000000, 0)}
}

func collect(t *testing.T, s *Store, exp string) []events.Event {
	t.Helper()
	var out []events.Event
	if err := s.Scan(exp, func(r *Record) error { out = append(out, r.Event(exp)); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAppendScanReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	in := []events.Event{
		exposure("a/b c", "u1", "control"),
		{Kind: events.Metric, Unit: "ü-2", Experiment: "a/b c", Name: "revenue", Value: 12.25, Time: time.Unix(5, 7)},
		{Kind: events.Conversion, Unit: "u3", Experiment: "other", Name: "buy", Value: 1, Forced: true, Time: time.Unix(6, 0)},
	}
	if err := s.Append(in); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(in[:1]); err == nil {
		t.Fatal("append after close succeeded")
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	names, _ := s.Experiments()
	if fmt.Sprint(names) != "[a/b c other]" {
		t.Errorf("experiments %q", names)
	}
	got := append(collect(t, s, "a/b c"), collect(t, s, "other")...)
	if len(got) != 3 {
		t.Fatalf("%d events back", len(got))
	}
	for i := range in {
		if got[i].Kind != in[i].Kind || got[i].Unit != in[i].Unit || got[i].Variant != in[i].Variant || got[i].Name != in[i].Name ||
			got[i].Value != in[i].Value || !got[i].Time.Equal(in[i].Time) || got[i].Forced != in[i].Forced {
			t.Errorf("event %d: %+v, want %+v", i, got[i], in[i])
		}
	}
	if evs := collect(t, s, "never"); len(evs) != 0 {
		t.Errorf("unknown experiment scanned %d events", len(evs))
	}
}

func TestTornTailIsCutOff(t *testing.T) {
	for _, cut := range []int{1, 5, 9, 20} {
		t.Run(strconv.Itoa(cut), func(t *testing.T) {
			dir := t.TempDir()
			s, _ := Open(dir)
			for i := range 10 {
				if err := s.Append([]events.Event{exposure("e", fmt.Sprint("u", i), "t")}); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			path := filepath.Join(dir, "e.log")
			st, _ := os.Stat(path)
			// A crash in the middle of the last record, then garbage.
			if err := os.Truncate(path, st.Size()-int64(cut)); err != nil {
				t.Fatal(err)
			}
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if n := len(collect(t, s, "e")); n != 9 {
				t.Fatalf("%d events after a torn tail, want 9", n)
			}
			if err := s.Append([]events.Event{exposure("e", "after", "t")}); err != nil {
				t.Fatal(err)
			}
			evs := collect(t, s, "e")
			if len(evs) != 10 || evs[9].Unit != "after" {
				t.Fatalf("after repair and append: %d events, last %+v", len(evs), evs[len(evs)-1])
			}
		})
	}
}

func TestCorruptRecordStopsTheLog(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir)
	_ = s.Append([]events.Event{exposure("e", "u1", "t"), exposure("e", "u2", "t")})
	s.Close()
	path := filepath.Join(dir, "e.log")
	b, _ := os.ReadFile(path)
	b[len(b)-3] ^= 0xff // flip bits in the second record's payload
	_ = os.WriteFile(path, b, 0o644)
	s, _ = Open(dir)
	defer s.Close()
	if evs := collect(t, s, "e"); len(evs) != 1 || evs[0].Unit != "u1" {
		t.Fatalf("after corruption: %+v", evs)
	}
}

func TestConcurrentAppends(t *testing.T) {
	s, _ := Open(t.TempDir())
	defer s.Close()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if err := s.Append([]events.Event{exposure("e", fmt.Sprintf("w%d-%d", w, i), "t")}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, e := range collect(t, s, "e") {
		seen[e.Unit] = true
	}
	if len(seen) != 400 {
		t.Fatalf("%d distinct events, want 400", len(seen))
	}
}

// TestKillNine appends from a child process that prints each acknowledged
// unit, kills it with SIGKILL mid-stream, and checks every acknowledged
// event is in the store after reopening.
func TestKillNine(t *testing.T) {
	if dir := os.Getenv("ABTEST_STORE_CHILD"); dir != "" {
		s, err := Open(dir)
		if err != nil {
			os.Exit(3)
		}
		for i := 0; ; i++ {
			batch := []events.Event{exposure("e", fmt.Sprint("a", i), "t"), exposure("e", fmt.Sprint("b", i), "c")}
			if err := s.Append(batch); err != nil {
				os.Exit(4)
			}
			fmt.Println(i)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillNine$")
	cmd.Env = append(os.Environ(), "ABTEST_STORE_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	acked := -1
	for sc.Scan() {
		n, err := strconv.Atoi(sc.Text())
		if err != nil {
			continue
		}
		acked = n
		if acked == 200 {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	_ = cmd.Wait()
	if acked < 200 {
		t.Fatalf("child acknowledged only %d batches", acked)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	seen := map[string]bool{}
	for _, e := range collect(t, s, "e") {
		seen[e.Unit] = true
	}
	for i := 0; i <= acked; i++ {
		if !seen[fmt.Sprint("a", i)] || !seen[fmt.Sprint("b", i)] {
			t.Fatalf("acknowledged batch %d lost (%d events stored)", i, len(seen))
		}
	}
}

// FuzzScan opens arbitrary log bytes beside a one-unit dictionary: the
// store must repair or reject them without panicking, scan what it kept,
// and take appends after it.
func FuzzScan(f *testing.F) {
	var seed []byte
	seed = appendRecord(seed, &events.Event{Kind: events.Metric, Unit: "u", Experiment: "e", Name: "n", Value: 2}, 0)
	f.Add(seed)
	f.Add(seed[:len(seed)-2])
	f.Add(appendRecord(nil, &events.Event{Kind: events.Exposure, Unit: "v", Experiment: "e", Variant: "t"}, 7))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "e.units"), appendFrame(nil, []byte("u")), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "e.log"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		n := 0
		if err := s.Scan("e", func(r *Record) error {
			if string(r.Unit) != "u" {
				t.Fatalf("unit %q", r.Unit)
			}
			n++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := s.Append([]events.Event{exposure("e", "x", "t")}); err != nil {
			t.Fatal(err)
		}
		m := 0
		_ = s.Scan("e", func(*Record) error { m++; return nil })
		if m != n+1 {
			t.Fatalf("%d records before an append, %d after", n, m)
		}
	})
}

// TestRecordWithoutItsUnitIsCutOff: a crash left the log's last record on
// disk but not its unit in the dictionary (never acknowledged): it is cut.
func TestRecordWithoutItsUnitIsCutOff(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir)
	_ = s.Append([]events.Event{exposure("e", "u1", "t")})
	_ = s.Append([]events.Event{exposure("e", "u2", "t")})
	s.Close()
	units, _ := os.ReadFile(filepath.Join(dir, "e.units"))
	if err := os.WriteFile(filepath.Join(dir, "e.units"), units[:len(units)-3], 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs := collect(t, s, "e")
	if len(evs) != 1 || evs[0].Unit != "u1" {
		t.Fatalf("%+v", evs)
	}
	// u2 comes back with a new number.
	if err := s.Append([]events.Event{exposure("e", "u2", "c")}); err != nil {
		t.Fatal(err)
	}
	if evs := collect(t, s, "e"); len(evs) != 2 || evs[1].Unit != "u2" || evs[1].Variant != "c" {
		t.Fatalf("%+v", evs)
	}
}

func TestUnitNumbersAreDense(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir)
	defer s.Close()
	_ = s.Append([]events.Event{exposure("e", "a", "t"), exposure("e", "b", "t"), exposure("e", "a", "t"), exposure("f", "a", "t")})
	var ids []uint32
	_ = s.Scan("e", func(r *Record) error { ids = append(ids, r.UnitID); return nil })
	if fmt.Sprint(ids) != "[0 1 0]" {
		t.Fatalf("unit numbers %v", ids)
	}
	// ScanDir reads the same without the store.
	var units []string
	_ = ScanDir(dir, "e", func(r *Record) error { units = append(units, string(r.Unit)); return nil })
	if fmt.Sprint(units) != "[a b a]" {
		t.Fatalf("ScanDir units %v", units)
	}
}

// FuzzUnits opens an arbitrary unit dictionary beside a log of one record
// for unit 0: the store keeps the record only if the dictionary's first
// entry survived, and takes appends after it.
func FuzzUnits(f *testing.F) {
	f.Add(appendFrame(appendFrame(nil, []byte("u")), []byte("v")))
	f.Add([]byte{1, 0, 0, 0, 9, 9, 9, 9, 'x'})
	f.Fuzz(func(t *testing.T, units []byte) {
		dir := t.TempDir()
		_ = os.WriteFile(filepath.Join(dir, "e.units"), units, 0o644)
		_ = os.WriteFile(filepath.Join(dir, "e.log"), appendRecord(nil, &events.Event{Kind: events.Exposure, Unit: "u", Experiment: "e", Variant: "t"}, 0), 0o644)
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		before := len(collect(t, s, "e"))
		if err := s.Append([]events.Event{exposure("e", "new", "t")}); err != nil {
			t.Fatal(err)
		}
		evs := collect(t, s, "e")
		if len(evs) != before+1 || evs[len(evs)-1].Unit != "new" {
			t.Fatalf("%d events before, %+v after", before, evs)
		}
	})
}
