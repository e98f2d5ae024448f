package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"sync"
)

// wholeSum is the whole file's sha256, taken over the pieces in file order
// as they are stored: a piece stored in order is hashed from memory, one
// stored ahead of a gap is read back from the file once the gap fills (it
// was just written, so it usually comes from the page cache). The file
// therefore needs no second full read at its end, which with many hosts
// finishing together costs as much disk as the transfer itself.
type wholeSum struct {
	mu      sync.Mutex
	h       hash.Hash
	next    int // the first piece not yet in h
	scratch []byte
}

// advance adds piece n (data, just stored) and every held piece after the
// ones already summed.
func (w *wholeSum) advance(j *job, f *os.File, n int, data []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.h == nil {
		w.h = sha256.New()
	}
	m := &j.spec.Manifest
	for w.next < m.Count() {
		j.mu.Lock()
		has := j.have.Has(w.next)
		j.mu.Unlock()
		if !has {
			return nil
		}
		if w.next == n {
			w.h.Write(data)
		} else {
			off, length := m.Span(w.next)
			if int64(cap(w.scratch)) < length {
				w.scratch = make([]byte, length)
			}
			buf := w.scratch[:length]
			if _, err := f.ReadAt(buf, off); err != nil {
				return fmt.Errorf("read back piece %d: %w", w.next, err)
			}
			w.h.Write(buf)
		}
		w.next++
	}
	w.scratch = nil
	return nil
}

// sum returns the hex sha256 when every piece is in it, else "".
func (w *wholeSum) sum(count int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.next < count {
		return ""
	}
	if w.h == nil {
		w.h = sha256.New()
	}
	return hex.EncodeToString(w.h.Sum(nil))
}
