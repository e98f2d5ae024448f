package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opskit/opskit/filefly/api"
	"github.com/opskit/opskit/filefly/piece"
	"github.com/opskit/opskit/filefly/throttle"
)

// maxVerifyRounds bounds how often a whole-file mismatch sends the job back
// to fetching (a mismatch with every piece verified means the disk lied).
const maxVerifyRounds = 3

// maxCorruptPerSource is how many bad pieces a source may send before the
// agent stops fetching from it.
const maxCorruptPerSource = 2

func (j *job) tempPath() string {
	return filepath.Join(filepath.Dir(j.dest), ".filefly-"+j.spec.ID+".part")
}

// run takes a job to its end: done, skipped or failed.
func (a *Agent) run(ctx context.Context, j *job) {
	stopReports := a.reportLoop(ctx, j)
	err := a.transfer(ctx, j)
	if ctx.Err() != nil {
		// Stopping: the state on disk lets the next start resume.
		stopReports()
		a.save(j)
		return
	}
	j.mu.Lock()
	if err != nil {
		j.report.State = api.StateFailed
		j.report.Error = err.Error()
		a.opts.Log.Error("transfer failed", "id", j.spec.ID, "err", err)
		// A failed job is final: its partial file would only take space.
		os.Remove(j.tempPath())
	}
	j.report.Finished = time.Now().UTC()
	j.mu.Unlock()
	if err := a.save(j); err != nil {
		a.opts.Log.Error("cannot persist job", "id", j.spec.ID, "err", err)
	}
	stopReports()
	a.sendFinalReport(ctx, j)
}

func (a *Agent) transfer(ctx context.Context, j *job) error {
	m := &j.spec.Manifest
	if err := os.MkdirAll(filepath.Dir(j.dest), 0o755); err != nil {
		return fmt.Errorf("destination directory: %w", err)
	}
	if j.have.Count(m.Count()) == 0 && a.alreadyThere(j) {
		j.mu.Lock()
		for i := 0; i < m.Count(); i++ {
			j.have.Set(i)
		}
		j.report.State = api.StateSkipped
		j.report.Bytes = m.Size
		j.report.Pieces = m.Count()
		j.report.SHA256Verified = true
		close(j.changed)
		j.changed = make(chan struct{})
		j.mu.Unlock()
		a.opts.Log.Info("destination already holds the file; skipped", "id", j.spec.ID, "dest", j.dest)
		return nil
	}
	f, err := os.OpenFile(j.tempPath(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("temporary file: %w", err)
	}
	if err := f.Truncate(m.Size); err != nil {
		f.Close()
		return fmt.Errorf("temporary file: %w", err)
	}
	j.mu.Lock()
	j.file = f
	j.mu.Unlock()
	closeFile := func() {
		j.mu.Lock()
		j.file = nil
		j.mu.Unlock()
		f.Close()
	}
	defer j.dropArriving()
	for round := 0; ; round++ {
		if err := a.fetchAll(ctx, j, f); err != nil {
			closeFile()
			return err
		}
		verifyStart := time.Now()
		bad, err := 0, error(nil)
		if round > 0 || j.whole.sum(m.Count()) != m.SHA256 {
			// Not summed on the way (a resumed job that fetched nothing,
			// a second round) or wrong: read the file back.
			bad, err = a.verifyWhole(j, f)
		}
		a.opts.Log.Debug("whole file checked", "id", j.spec.ID, "host", j.spec.Host, "ms", time.Since(verifyStart).Milliseconds())
		if err != nil {
			closeFile()
			return err
		}
		if bad == 0 {
			break
		}
		if round+1 >= maxVerifyRounds {
			closeFile()
			return fmt.Errorf("whole-file sha256 still wrong after %d rounds", maxVerifyRounds)
		}
	}
	if err := f.Sync(); err != nil {
		closeFile()
		return fmt.Errorf("sync: %w", err)
	}
	if err := a.applyOwnership(j, f); err != nil {
		closeFile()
		return err
	}
	if err := os.Rename(j.tempPath(), j.dest); err != nil {
		closeFile()
		return fmt.Errorf("rename into place: %w", err)
	}
	syncDir(filepath.Dir(j.dest))
	closeFile()
	j.mu.Lock()
	j.report.SHA256Verified = true
	j.mu.Unlock()
	a.opts.Log.Info("file in place", "id", j.spec.ID, "dest", j.dest)
	if j.spec.PostCmd != "" {
		code, err := a.postCmd(ctx, j)
		j.mu.Lock()
		j.report.PostCmdExit = &code
		j.mu.Unlock()
		if err != nil {
			return err
		}
	}
	// Done only now: the server's view must not end before the post-cmd.
	j.mu.Lock()
	j.report.State = api.StateDone
	j.mu.Unlock()
	return nil
}

// alreadyThere reports whether the destination already holds the file.
func (a *Agent) alreadyThere(j *job) bool {
	f, err := os.Open(j.dest)
	if err != nil {
		return false
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() || info.Size() != j.spec.Manifest.Size {
		return false
	}
	sum, _, err := piece.HashFile(f)
	return err == nil && sum == j.spec.Manifest.SHA256
}

// verifyWhole checks the whole temporary file; on a mismatch it re-checks
// each piece and clears the bad ones so that they are fetched again.
func (a *Agent) verifyWhole(j *job, f *os.File) (bad int, err error) {
	m := &j.spec.Manifest
	sum, _, err := piece.HashFile(io.NewSectionReader(f, 0, m.Size))
	if err != nil {
		return 0, fmt.Errorf("read back: %w", err)
	}
	if sum == m.SHA256 {
		return 0, nil
	}
	a.opts.Log.Warn("whole-file sha256 mismatch; re-checking pieces", "id", j.spec.ID)
	for n := 0; n < m.Count(); n++ {
		off, length := m.Span(n)
		buf := make([]byte, length)
		if _, err := f.ReadAt(buf, off); err != nil {
			return 0, fmt.Errorf("read back: %w", err)
		}
		if m.Check(n, buf) != nil {
			j.mu.Lock()
			j.have.Clear(n)
			j.mu.Unlock()
			bad++
		}
	}
	if bad == 0 {
		return 0, errors.New("whole-file sha256 mismatch with every piece correct: the manifest is inconsistent")
	}
	return bad, nil
}

// fetchAll fetches every missing piece. With stripes, each stripe is
// fetched from its own sources at the same time; the first error ends all.
func (a *Agent) fetchAll(ctx context.Context, j *job, f *os.File) error {
	if len(j.spec.StripeSources) <= 1 {
		return a.fetchStripe(ctx, j, f, j.spec.Sources, 0, 1)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	k := len(j.spec.StripeSources)
	errs := make(chan error, k)
	for s, sources := range j.spec.StripeSources {
		go func() {
			err := a.fetchStripe(ctx, j, f, sources, s, k)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	var first error
	for range k {
		// The first error is the cause; the others are its cancellation.
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// fetchStripe fetches the missing pieces first, first+stripes, … in order,
// from the first live source of sources. Each piece is registered as
// arriving before it is asked for, so this host's children can follow its
// bytes as they come in (see relayArriving).
func (a *Agent) fetchStripe(ctx context.Context, j *job, f *os.File, sources []string, first, stripes int) error {
	m := &j.spec.Manifest
	src, corruptFromSrc := 0, 0
	for n := first; n < m.Count(); n += stripes {
		j.mu.Lock()
		has := j.have.Has(n)
		j.mu.Unlock()
		if has {
			continue
		}
		_, length := m.Span(n)
		p := j.startArriving(n, length)
		bytesFrom := src // the source p's bytes so far came from
		lastProgress, progressAt := [2]int64{-2, -1}, time.Now()
		backoff := 100 * time.Millisecond
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			if bytesFrom != src {
				// The bytes of one piece come from one source: another
				// source's copy could differ, and only the whole is checked.
				p.restart()
				bytesFrom = src
			}
			j.mu.Lock()
			j.report.Source = sources[src]
			j.mu.Unlock()
			asked := time.Now()
			count, err := a.fetch(ctx, j, sources[src], n, p)
			if err == nil {
				a.opts.Log.Debug("piece arrived", "id", j.spec.ID, "host", j.spec.Host, "piece", n, "from", sources[src],
					"asked", asked.UnixMilli(), "ms", time.Since(asked).Milliseconds())
				if err = m.CheckSum(n, p.sum()); err != nil {
					a.corrupt.Inc()
					j.mu.Lock()
					j.report.CorruptPieces++
					j.mu.Unlock()
					// Fetch that piece again from another holder, but stay
					// attached to the parent for the rest.
					a.opts.Log.Warn("piece failed its checksum; fetching it from another holder", "id", j.spec.ID, "piece", n, "from", sources[src])
					err = a.refetch(ctx, j, sources, src, n, p)
					bytesFrom = -1 // whatever refetch left came from elsewhere
					corruptFromSrc++
					if err == nil && corruptFromSrc >= maxCorruptPerSource && src+1 < len(sources) {
						a.opts.Log.Warn("parent keeps sending bad pieces; re-attaching to the next holder", "id", j.spec.ID,
							"from", sources[src], "to", sources[src+1])
						src++
						corruptFromSrc = 0
						a.reattached.Inc()
						j.mu.Lock()
						j.report.Reattached++
						j.mu.Unlock()
					}
				}
			}
			if err == nil {
				if err := a.store(j, f, n, p.buf); err != nil {
					return err
				}
				a.opts.Log.Debug("piece stored", "id", j.spec.ID, "host", j.spec.Host, "piece", n, "at", time.Now().UnixMilli())
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, errNotYet) || errors.Is(err, errCutShort) {
				// The source is alive; stay while it makes progress, in
				// pieces held or in bytes of this piece.
				if cur := [2]int64{int64(count), p.filled}; cur != lastProgress {
					lastProgress, progressAt = cur, time.Now()
				} else if errors.Is(err, errCutShort) {
					time.Sleep(50 * time.Millisecond) // a body that ended at once: do not spin
				}
				if time.Since(progressAt) < 3*a.opts.StallTimeout {
					continue
				}
				err = fmt.Errorf("no progress for %s", 3*a.opts.StallTimeout)
			}
			if src+1 < len(sources) {
				a.opts.Log.Warn("re-attaching to the next holder", "id", j.spec.ID, "piece", n,
					"from", sources[src], "to", sources[src+1], "err", err)
				src++
				a.reattached.Inc()
				j.mu.Lock()
				j.report.Reattached++
				j.mu.Unlock()
				lastProgress, progressAt = [2]int64{-2, -1}, time.Now()
				corruptFromSrc = 0
				continue
			}
			// The last holder is the server: wait for it (it may be restarting).
			a.opts.Log.Warn("fetch from the server failed; retrying", "id", j.spec.ID, "piece", n, "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
	return nil
}

// refetch gets piece n whole into p from the holders after sources[src],
// in order, until one sends it intact.
func (a *Agent) refetch(ctx context.Context, j *job, sources []string, src, n int, p *arriving) error {
	err := errors.New("no other holder")
	for k := src + 1; k < len(sources); k++ {
		p.restart()
		if _, err = a.fetch(ctx, j, sources[k], n, p); err == nil {
			if err = j.spec.Manifest.CheckSum(n, p.sum()); err == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("piece %d: bad checksum from the parent, and from the others: %w", n, err)
}

// store writes a verified piece, marks it held (it stops arriving), wakes
// the children waiting for it, adds it to the whole-file sum and persists
// the bitmap.
func (a *Agent) store(j *job, f *os.File, n int, data []byte) error {
	off, _ := j.spec.Manifest.Span(n)
	if _, err := f.WriteAt(data, off); err != nil {
		return fmt.Errorf("write piece %d: %w", n, err)
	}
	j.mu.Lock()
	j.have.Set(n)
	delete(j.arriving, n)
	j.report.Pieces = j.have.Count(j.spec.Manifest.Count())
	j.report.Bytes += int64(len(data))
	j.report.BytesFetched += int64(len(data))
	close(j.changed)
	j.changed = make(chan struct{})
	j.mu.Unlock()
	if err := j.whole.advance(j, f, n, data); err != nil {
		return err
	}
	return a.save(j)
}

// errCutShort is a body that ended cleanly before the piece did: the
// source is alive but its own copy of the piece is still arriving.
var errCutShort = errors.New("source ended the piece early; it is still arriving there")

// fetch downloads piece n from src into p, from p.filled on (a resumed
// piece asks for the rest with a Range header). A source silent for
// StallTimeout is abandoned. count is how many pieces a source that does
// not have the piece yet holds.
func (a *Agent) fetch(ctx context.Context, j *job, src string, n int, p *arriving) (count int, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchdog := time.AfterFunc(a.opts.StallTimeout, cancel)
	defer watchdog.Stop()
	url := fmt.Sprintf("%s/v1/transfers/%s/pieces/%d?wait=%s", src, j.spec.ID, n, a.opts.StallTimeout/2)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if len(a.opts.Token) > 0 {
		req.Header.Set("Authorization", "Bearer "+string(a.opts.Token))
	}
	from := p.filled
	if from > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", from))
	}
	asked := time.Now()
	resp, err := a.opts.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if from > 0 {
			p.restart() // the source sent the whole piece
		}
	case http.StatusPartialContent:
		if !strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", from)) {
			return 0, fmt.Errorf("piece %d from %s: asked from byte %d, got %q", n, src, from, resp.Header.Get("Content-Range"))
		}
	case http.StatusServiceUnavailable:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		count, _ := strconv.Atoi(resp.Header.Get("X-Filefly-Pieces"))
		return count, errNotYet
	default:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return 0, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	a.opts.Log.Debug("piece answered", "id", j.spec.ID, "host", j.spec.Host, "piece", n, "from", src, "wait_ms", time.Since(asked).Milliseconds())
	body := throttle.Reader(ctx, resp.Body, a.ingress, j.limiter)
	for !p.complete() {
		k, err := body.Read(p.buf[p.filled:])
		if k > 0 {
			p.grow(k)
			a.fetched.Add(k)
			watchdog.Reset(a.opts.StallTimeout)
		}
		if err == io.EOF {
			if p.complete() {
				break
			}
			return 0, errCutShort
		}
		if err != nil {
			return 0, fmt.Errorf("piece %d from %s: %w", n, src, err)
		}
	}
	return 0, nil
}

// applyOwnership sets the file's mode and owner before it is put in place.
func (a *Agent) applyOwnership(j *job, f *os.File) error {
	mode := os.FileMode(0o644)
	if j.spec.Mode != 0 {
		mode = os.FileMode(j.spec.Mode) & os.ModePerm
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if j.spec.Owner == "" {
		return nil
	}
	name, group, _ := strings.Cut(j.spec.Owner, ":")
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("owner %q: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return fmt.Errorf("group %q: %w", group, err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	if err := f.Chown(uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", j.spec.Owner, err)
	}
	return nil
}

// postCmd runs the job's command with sh -c, bounded by its timeout.
func (a *Agent) postCmd(ctx context.Context, j *job) (int, error) {
	timeout := time.Duration(j.spec.PostCmdTimeout)
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", j.spec.PostCmd)
	cmd.Env = append(os.Environ(), "FILEFLY_DEST="+j.dest, "FILEFLY_SHA256="+j.spec.Manifest.SHA256, "FILEFLY_TRANSFER="+j.spec.ID)
	cmd.Dir = filepath.Dir(j.dest)
	out, err := cmd.CombinedOutput()
	code := cmd.ProcessState.ExitCode()
	if err != nil {
		if ctx.Err() != nil {
			return code, fmt.Errorf("post-cmd timed out after %s", timeout)
		}
		return code, fmt.Errorf("post-cmd exit %d: %s", code, strings.TrimSpace(string(tail(out, 300))))
	}
	a.opts.Log.Info("post-cmd ran", "id", j.spec.ID, "exit", code)
	return code, nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// reportLoop sends progress every ReportInterval until the returned stop.
func (a *Agent) reportLoop(ctx context.Context, j *job) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(a.opts.ReportInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				a.sendReport(ctx, j)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// sendFinalReport retries until the server has the job's result (it may be
// restarting), or the agent stops.
func (a *Agent) sendFinalReport(ctx context.Context, j *job) {
	backoff := 200 * time.Millisecond
	for a.sendReport(ctx, j) != nil {
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (a *Agent) sendReport(ctx context.Context, j *job) error {
	rep := j.snapshot()
	b, _ := json.Marshal(rep)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	url := j.spec.Server + "/v1/transfers/" + j.spec.ID + "/report"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if len(a.opts.Token) > 0 {
		req.Header.Set("Authorization", "Bearer "+string(a.opts.Token))
	}
	resp, err := a.opts.HTTP.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("report: %s", resp.Status)
	}
	return nil
}
