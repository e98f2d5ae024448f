package silence

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/store"
)

// FuzzSet feeds arbitrary POST /api/v2/silences bodies to Set: it never
// panics, and a silence it accepts can be read back and applied.
func FuzzSet(f *testing.F) {
	f.Add([]byte(`{"matchers":[{"name":"instance","value":"web0[12]","isRegex":true,"isEqual":true}],"startsAt":"2026-01-01T00:00:00Z","endsAt":"2026-01-01T02:00:00Z","createdBy":"me","comment":"c"}`))
	f.Add([]byte(`{"id":"x","matchers":[{"name":"a","value":""}],"endsAt":"2026-01-01T02:00:00Z"}`))
	db, err := store.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)
	s, err := Open(db, func() time.Time { return now }, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var in Silence
		if json.Unmarshal(body, &in) != nil {
			return
		}
		id, err := s.Set(in)
		if err != nil {
			return
		}
		got, err := s.Get(id)
		if err != nil || got.ID != id {
			t.Fatalf("accepted silence %s not found: %v", id, err)
		}
		ls := alert.Labels{}
		for _, m := range got.Matchers {
			ls[m.Name] = m.Value
		}
		s.MutedBy(ls)
	})
}
