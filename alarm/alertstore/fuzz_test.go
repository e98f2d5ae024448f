package alertstore

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opskit/opskit/alarm/alert"
)

// FuzzReplay writes arbitrary bytes as the alert log and checks that
// opening it never panics: a damaged tail is cut, a damaged record is an
// error, and whatever opens accepts new alerts.
func FuzzReplay(f *testing.F) {
	dir := f.TempDir()
	s, err := Open(dir, time.Now, time.Hour, 0)
	if err != nil {
		f.Fatal(err)
	}
	s.Put([]*alert.Alert{mk(1, time.Now()), mk(2, time.Now())})
	s.Close()
	good, _ := os.ReadFile(filepath.Join(dir, segmentName(1)))
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, segmentName(1)), data, 0o600)
		s, err := Open(dir, time.Now, time.Hour, 0)
		if err != nil {
			return
		}
		defer s.Close()
		if _, err := s.Put([]*alert.Alert{mk(3, time.Now())}); err != nil {
			t.Fatal(err)
		}
	})
}
