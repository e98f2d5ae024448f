package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"net/http"
	"sync"
	"time"

	"github.com/opskit/opskit/filefly/throttle"
)

// relayChunk is the most bytes of a piece in flight that one write to a
// child carries: small enough that a child gets bytes a fraction of a
// second after they arrive, large enough to keep the syscalls few.
const relayChunk = 256 << 10

// arriving is a piece on its way in. Its bytes are relayed to children as
// they arrive (cut-through), before the piece is verified: each child
// checks the piece's sha256 itself at its end, so relaying unverified
// bytes cannot make a child keep a bad piece. Only the fetcher writes buf,
// and only beyond filled; a restart of the piece gets a fresh buf, so a
// reader that took (buf, filled) under mu may read buf[:filled] unlocked.
type arriving struct {
	length int64
	hash   hash.Hash // of buf[:filled]; the fetcher's alone

	mu      sync.Mutex
	buf     []byte
	filled  int64
	dropped bool          // the job stopped: no more bytes will come
	changed chan struct{} // closed and replaced when filled grows or it restarts
}

func newArriving(length int64) *arriving {
	return &arriving{length: length, hash: sha256.New(), buf: make([]byte, length), changed: make(chan struct{})}
}

// view returns what a reader may read now.
func (p *arriving) view() (buf []byte, filled int64, dropped bool, changed chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf, p.filled, p.dropped, p.changed
}

// grow records k more bytes written at buf[filled:]; the fetcher's alone.
func (p *arriving) grow(k int) {
	p.hash.Write(p.buf[p.filled : p.filled+int64(k)])
	p.mu.Lock()
	p.filled += int64(k)
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// restart throws the bytes so far away: the piece will come again from
// offset 0, possibly from another source. Readers already past offset 0
// wait until the new bytes catch up with them.
func (p *arriving) restart() {
	p.hash.Reset()
	p.mu.Lock()
	p.buf = make([]byte, p.length)
	p.filled = 0
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// drop ends the piece for its readers: the job is stopping.
func (p *arriving) drop() {
	p.mu.Lock()
	if !p.dropped {
		p.dropped = true
		close(p.changed)
		p.changed = make(chan struct{})
	}
	p.mu.Unlock()
}

// sum is the hex sha256 of the bytes so far; the fetcher's alone.
func (p *arriving) sum() string { return hex.EncodeToString(p.hash.Sum(nil)) }

// complete reports whether every byte has arrived; the fetcher's alone.
func (p *arriving) complete() bool { return p.filled == p.length }

// startArriving registers piece n as arriving (or returns the entry that
// already is) and wakes children waiting for it, so they can follow it.
func (j *job) startArriving(n int, length int64) *arriving {
	j.mu.Lock()
	defer j.mu.Unlock()
	if p, ok := j.arriving[n]; ok {
		return p
	}
	p := newArriving(length)
	j.arriving[n] = p
	close(j.changed)
	j.changed = make(chan struct{})
	return p
}

// dropArriving ends every arriving piece: readers following them get
// their connection cut, as they would from a dead host.
func (j *job) dropArriving() {
	j.mu.Lock()
	defer j.mu.Unlock()
	for n, p := range j.arriving {
		p.drop()
		delete(j.arriving, n)
	}
}

// relayArriving streams piece n to a child from offset from while it
// arrives. It returns false, having written nothing, when no byte past
// from arrives within firstWait (the caller answers "not yet"). Once bytes
// flow, a pause of pause ends the body early and cleanly (chunked
// encoding), which tells the child that this host is alive and the piece
// is on its way, so it asks again from where it got to; a stopping job
// cuts the connection instead, like a dead host.
func (a *Agent) relayArriving(w http.ResponseWriter, r *http.Request, j *job, n int, p *arriving, from int64, firstWait, pause time.Duration) bool {
	off := from
	started := false
	idle := time.NewTimer(firstWait)
	defer idle.Stop()
	out := throttle.Writer(r.Context(), w, a.egress)
	rc := http.NewResponseController(w)
	for off < p.length {
		buf, filled, dropped, changed := p.view()
		if dropped {
			if !started {
				return false
			}
			panic(http.ErrAbortHandler)
		}
		if filled <= off {
			select {
			case <-changed:
				continue
			case <-idle.C:
				return started // a clean, short end once started
			case <-r.Context().Done():
				return true
			}
		}
		if !started {
			started = true
			if from > 0 {
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, p.length-1, p.length))
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			if from > 0 {
				w.WriteHeader(http.StatusPartialContent)
			} else {
				w.WriteHeader(http.StatusOK)
			}
		}
		end := min(filled, off+relayChunk)
		chunk := buf[off:end]
		if off == 0 {
			chunk = a.maybeCorrupt(j, n, chunk)
		}
		k, err := out.Write(chunk)
		a.served.Add(k)
		if err != nil {
			return true
		}
		if err := rc.Flush(); err != nil {
			return true
		}
		off += int64(k)
		idle.Reset(pause)
	}
	return true
}

// maybeCorrupt is the test hook: the first time piece CorruptPiece is
// served, its first byte goes out flipped (on a copy).
func (a *Agent) maybeCorrupt(j *job, n int, chunk []byte) []byte {
	if a.opts.CorruptPiece != n || len(chunk) == 0 {
		return chunk
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.corrupt {
		return chunk
	}
	j.corrupt = true
	bad := append([]byte(nil), chunk...)
	bad[0] ^= 0xff
	a.opts.Log.Warn("test hook: serving a corrupted piece", "id", j.spec.ID, "piece", n)
	return bad
}
