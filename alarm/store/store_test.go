package store

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestWriteReadDeleteReopen(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := db.Write(Silences, []KV{{Key: []byte(fmt.Sprintf("k%02d", i)), Value: []byte("v")}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := db.Write(Silences, []KV{{Key: []byte("k07")}}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n, _ := db.Count(Silences)
	if n != 49 {
		t.Fatalf("after reopen %d keys, want 49", n)
	}
	if v, _ := db.Get(Silences, []byte("k07")); v != nil {
		t.Fatal("deleted key is back")
	}
	var seen []string
	db.ForEach(Silences, []byte("k45"), func(k, v []byte) error {
		seen = append(seen, string(k))
		if len(seen) == 3 {
			return ErrStop
		}
		return nil
	})
	if fmt.Sprint(seen) != "[k45 k46 k47]" {
		t.Fatalf("ForEach from k45 = %v", seen)
	}
}

func TestTimeKeyOrder(t *testing.T) {
	a := TimeKey(time.Unix(100, 0), 9)
	b := TimeKey(time.Unix(101, 0), 1)
	if string(a) >= string(b) {
		t.Fatal("time keys do not sort by time")
	}
	if z := TimeKey(time.Time{}, 0); string(z) > string(a) {
		t.Fatal("the zero time does not sort first")
	}
	if !KeyTime(b).Equal(time.Unix(101, 0)) {
		t.Fatal("KeyTime")
	}
}
