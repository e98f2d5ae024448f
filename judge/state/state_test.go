package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/judge/engine"
)

func alert(endpoint string, st engine.State, v float64) engine.Alert {
	return engine.Alert{Strategy: "s", Kind: engine.KindCondition, State: st, Value: v,
		Labels: map[string]string{"alertname": "s", "endpoint": endpoint},
		Series: map[string]string{"__name__": "m", "endpoint": endpoint}, StartsAt: time.Unix(1_700_000_000, 0).UTC()}
}

func TestJournalAndCompact(t *testing.T) {
	dir := t.TempDir()
	s, got, err := Open(dir)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty dir: %v %v", got, err)
	}
	if err := s.Append([]engine.Alert{alert("h1", engine.StatePending, 1), alert("h2", engine.StateFiring, 2)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Append([]engine.Alert{alert("h1", engine.StateFiring, 3)}, []engine.Alert{alert("h2", engine.StateFiring, 2)}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// A crash mid-append leaves a torn last line: ignored.
	f, _ := os.OpenFile(filepath.Join(dir, JournalFile), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"op":"put","alert":{"strat`)
	f.Close()
	s, got, err = Open(dir)
	if err != nil || len(got) != 1 || got[0].Labels["endpoint"] != "h1" || got[0].State != engine.StateFiring || got[0].Value != 3 {
		t.Fatalf("after replay: %+v %v", got, err)
	}
	if err := s.Compact([]engine.Alert{alert("h3", engine.StateResolved, 4)}); err != nil {
		t.Fatal(err)
	}
	if s.JournalSize() != 0 {
		t.Fatalf("journal not emptied: %d", s.JournalSize())
	}
	s.Append([]engine.Alert{alert("h4", engine.StateFiring, 5)}, nil)
	s.Close()
	_, got, err = Open(dir)
	if err != nil || len(got) != 2 || got[0].Labels["endpoint"] != "h3" || got[1].Labels["endpoint"] != "h4" {
		t.Fatalf("after compaction: %+v %v", got, err)
	}
}

func TestDamage(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, SnapshotFile), []byte(`{"version":9}`), 0o600)
	if _, _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "version 9") {
		t.Fatalf("future version: %v", err)
	}
	os.WriteFile(filepath.Join(dir, SnapshotFile), []byte(`{`), 0o600)
	if _, _, err := Open(dir); err == nil {
		t.Fatal("damaged snapshot accepted")
	}
	os.Remove(filepath.Join(dir, SnapshotFile))
	os.WriteFile(filepath.Join(dir, JournalFile), []byte("garbage\n{}\n"), 0o600)
	if _, _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("damaged journal line: %v", err)
	}
}

// FuzzReplay: any journal content is replayed or refused, never a panic.
func FuzzReplay(f *testing.F) {
	f.Add([]byte(`{"op":"put","alert":{"strategy":"s","kind":"condition","series":{"__name__":"m"}}}` + "\n"))
	f.Add([]byte(`{"op":"del","alert":{"strategy":"s","kind":"host_nodata","labels":{"endpoint":"h"}}}` + "\n{\"op\":"))
	f.Fuzz(func(t *testing.T, data []byte) {
		replay(strings.NewReader(string(data)), map[string]engine.Alert{}, 0)
	})
}

// TestCrashBetweenSnapshotAndTruncate: records the snapshot already holds
// are not replayed over it.
func TestCrashBetweenSnapshotAndTruncate(t *testing.T) {
	dir := t.TempDir()
	s, _, _ := Open(dir)
	s.Append([]engine.Alert{alert("h1", engine.StateFiring, 1)}, nil)
	journal, _ := os.ReadFile(filepath.Join(dir, JournalFile))
	resolved := alert("h1", engine.StateResolved, 2)
	s.Compact([]engine.Alert{resolved})
	s.Close()
	// The crash: the old journal is still there beside the new snapshot.
	os.WriteFile(filepath.Join(dir, JournalFile), journal, 0o600)
	s, got, err := Open(dir)
	if err != nil || len(got) != 1 || got[0].State != engine.StateResolved {
		t.Fatalf("replayed an old record over the snapshot: %+v %v", got, err)
	}
	// New records continue the sequence and are replayed.
	s.Append([]engine.Alert{alert("h2", engine.StateFiring, 3)}, nil)
	s.Close()
	if _, got, _ = Open(dir); len(got) != 2 {
		t.Fatalf("after more appends: %+v", got)
	}
}
