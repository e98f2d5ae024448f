package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Whisper file layout (all big-endian): a 16-byte header (aggregation type,
// max retention, xff as float32, archive count), 12 bytes of archive info
// per archive (offset, seconds per point, points), then each archive's
// points of 12 bytes (uint32 timestamp, float64 value). A slot holds the
// point whose timestamp it carries, so a stale slot is told apart from a
// written one by its timestamp.
const (
	whisperHeaderSize  = 16
	whisperArchiveSize = 12
	whisperPointSize   = 12
	// maxWhisperArchives bounds what a corrupt header can make us read.
	maxWhisperArchives = 64
)

// errWhisperIncomplete marks a file shorter than its header says: carbon is
// still creating it, or it is truncated.
var errWhisperIncomplete = errors.New("whisper file shorter than its header says")

type whisperArchive struct {
	Offset          int64
	SecondsPerPoint int64
	Points          int64
}

// Size is the archive's length in bytes.
func (a whisperArchive) Size() int64 { return a.Points * whisperPointSize }

// readWhisperArchives reads a whisper header and checks that every archive
// fits in a file of fileSize bytes.
func readWhisperArchives(r io.ReaderAt, fileSize int64) ([]whisperArchive, error) {
	var head [whisperHeaderSize]byte
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return nil, fmt.Errorf("whisper header: %w", incomplete(err))
	}
	count := binary.BigEndian.Uint32(head[12:16])
	if count == 0 || count > maxWhisperArchives {
		return nil, fmt.Errorf("whisper header: %d archives", count)
	}
	info := make([]byte, int(count)*whisperArchiveSize)
	if _, err := r.ReadAt(info, whisperHeaderSize); err != nil {
		return nil, fmt.Errorf("whisper archive info: %w", incomplete(err))
	}
	archives := make([]whisperArchive, count)
	for k := range archives {
		b := info[k*whisperArchiveSize:]
		a := whisperArchive{
			Offset:          int64(binary.BigEndian.Uint32(b[0:4])),
			SecondsPerPoint: int64(binary.BigEndian.Uint32(b[4:8])),
			Points:          int64(binary.BigEndian.Uint32(b[8:12])),
		}
		if a.SecondsPerPoint == 0 || a.Points == 0 {
			return nil, fmt.Errorf("whisper archive %d: %d points of %ds", k, a.Points, a.SecondsPerPoint)
		}
		if a.Offset < whisperHeaderSize+int64(len(info)) {
			return nil, fmt.Errorf("whisper archive %d: offset %d inside the header", k, a.Offset)
		}
		if a.Offset+a.Size() > fileSize {
			return nil, fmt.Errorf("whisper archive %d: bytes %d+%d past the end at %d: %w", k, a.Offset, a.Size(), fileSize, errWhisperIncomplete)
		}
		archives[k] = a
	}
	return archives, nil
}

// incomplete turns a short read into errWhisperIncomplete.
func incomplete(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errWhisperIncomplete
	}
	return err
}

// readWhisperPoint reads the point at slot index k of archive a.
func readWhisperPoint(r io.ReaderAt, a whisperArchive, k int64) (int64, float64, error) {
	var b [whisperPointSize]byte
	if _, err := r.ReadAt(b[:], a.Offset+k*whisperPointSize); err != nil {
		return 0, 0, fmt.Errorf("whisper point: %w", incomplete(err))
	}
	return int64(binary.BigEndian.Uint32(b[0:4])), math.Float64frombits(binary.BigEndian.Uint64(b[4:12])), nil
}

// whisperHas reports whether the finest archive holds a point for ts. Whisper
// places a point relative to the archive's first slot, which holds the
// archive's base timestamp (0 while the archive is empty).
func whisperHas(r io.ReaderAt, fileSize, ts int64) (bool, error) {
	archives, err := readWhisperArchives(r, fileSize)
	if err != nil {
		return false, err
	}
	a := archives[0]
	base, _, err := readWhisperPoint(r, a, 0)
	if err != nil || base == 0 {
		return false, err
	}
	aligned := ts - ts%a.SecondsPerPoint
	slot := ((aligned-base)/a.SecondsPerPoint%a.Points + a.Points) % a.Points
	got, _, err := readWhisperPoint(r, a, slot)
	if err != nil {
		return false, err
	}
	return got == aligned, nil
}

// whisperSamples returns the points of the finest archive with a timestamp
// at or after from, in no particular order.
func whisperSamples(r io.ReaderAt, fileSize, from int64) (map[int64]float64, error) {
	archives, err := readWhisperArchives(r, fileSize)
	if err != nil {
		return nil, err
	}
	a := archives[0]
	raw := make([]byte, a.Size())
	if _, err := r.ReadAt(raw, a.Offset); err != nil {
		return nil, fmt.Errorf("whisper archive: %w", incomplete(err))
	}
	out := map[int64]float64{}
	for k := int64(0); k < a.Points; k++ {
		b := raw[k*whisperPointSize:]
		ts := int64(binary.BigEndian.Uint32(b[0:4]))
		if ts != 0 && ts >= from {
			out[ts] = math.Float64frombits(binary.BigEndian.Uint64(b[4:12]))
		}
	}
	return out, nil
}

// whisperPathOf is where carbon keeps a Graphite path under its data dir.
func whisperPathOf(dataDir, path string) string {
	return filepath.Join(dataDir, filepath.FromSlash(strings.ReplaceAll(path, ".", "/"))+".wsp")
}

// whisperFileHas opens path and checks it for ts; a file not created yet
// counts as not having it.
func whisperFileHas(path string, ts int64) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("whisper %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("whisper %s: %w", path, err)
	}
	ok, err := whisperHas(f, fi.Size(), ts)
	if errors.Is(err, errWhisperIncomplete) {
		return false, nil // carbon is still creating it
	}
	if err != nil {
		return false, fmt.Errorf("whisper %s: %w", path, err)
	}
	return ok, nil
}

// waitWhisperWritten polls carbon's data dir until every series' file holds
// the workload's last point. Carbon's cache writes out all the points it
// holds for a metric at once, and a series' points arrive in time order over
// one connection, so the last point on disk means all of them are.
func waitWhisperWritten(ctx context.Context, dataDir string, w Workload, poll time.Duration) error {
	last := w.Time(w.Points - 1)
	pending := make([]int, w.Series)
	for i := range pending {
		pending[i] = i
	}
	for {
		still := pending[:0]
		for _, i := range pending {
			ok, err := whisperFileHas(whisperPathOf(dataDir, GraphitePath(i)), last)
			if err != nil {
				return err
			}
			if !ok {
				still = append(still, i)
			}
		}
		pending = still
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for whisper files (%d of %d series lack their last point, e.g. %s): %w",
				len(pending), w.Series, GraphitePath(pending[0]), ctx.Err())
		case <-time.After(poll):
		}
	}
}

// carbonReceived reads carbon's own instrumentation (the
// carbon.agents.<instance>.metricsReceived files, one point per
// CARBON_METRIC_INTERVAL) and adds up the points received since from (Unix
// seconds). It returns that total and the first recorded time at which the
// running total reached want, or, when it never did, the time of the last
// non-zero recording.
func carbonReceived(dataDir string, from, want int64) (received int64, at int64, err error) {
	files, err := filepath.Glob(filepath.Join(dataDir, "carbon", "agents", "*", "metricsReceived.wsp"))
	if err != nil {
		return 0, 0, fmt.Errorf("carbon instrumentation: %w", err)
	}
	perSecond := map[int64]float64{}
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return 0, 0, fmt.Errorf("carbon instrumentation: %w", err)
		}
		fi, err := f.Stat()
		if err == nil {
			var samples map[int64]float64
			samples, err = whisperSamples(f, fi.Size(), from)
			for ts, v := range samples {
				perSecond[ts] += v
			}
		}
		f.Close()
		if err != nil {
			return 0, 0, fmt.Errorf("carbon instrumentation %s: %w", path, err)
		}
	}
	total, at := runningTotal(perSecond, float64(want))
	return int64(total), at, nil
}

// runningTotal adds counts up in time order. It returns the total and the
// first timestamp at which it reached want, or the last timestamp with a
// non-zero count when it never did.
func runningTotal(counts map[int64]float64, want float64) (float64, int64) {
	times := make([]int64, 0, len(counts))
	for ts := range counts {
		times = append(times, ts)
	}
	slices.Sort(times)
	total, at := 0.0, int64(0)
	reached := false
	for _, ts := range times {
		if counts[ts] == 0 {
			continue
		}
		total += counts[ts]
		if !reached {
			at = ts
			reached = total >= want
		}
	}
	return total, at
}
