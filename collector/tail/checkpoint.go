package tail

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"slices"

	"github.com/opskit/opskit/internal/atomicfile"
)

// FingerprintBytes is how much of a file's head its fingerprint covers at
// most. A file shorter than that is fingerprinted over what it has, and the
// fingerprint is widened as it grows.
const FingerprintBytes = 1024

// maxCheckpointFile bounds what ReadCheckpoints accepts, so that a damaged
// file cannot make us allocate much.
const maxCheckpointFile = 64 << 20

// Identity tells one file from another: device and inode, and a fingerprint
// of its first bytes so that a reused inode is not taken for the old file.
// Born (the time the collector first saw this file, in Unix nanoseconds)
// completes the identity's name in events: see ID.
type Identity struct {
	Dev   uint64 `json:"dev"`
	Inode uint64 `json:"inode"`
	FPLen int    `json:"fp_len"`
	FP    uint64 `json:"fp"`
	Born  int64  `json:"born"`
}

// ID names the file in events: stable for the file's life, across renames
// and restarts, and different for a new file on a reused inode or a file
// truncated and written again.
func (id Identity) ID() string {
	return fmt.Sprintf("%x-%x-%x", id.Dev, id.Inode, id.Born)
}

// Checkpoint is one file's position: every byte before Offset has been
// delivered.
type Checkpoint struct {
	Identity
	Path   string `json:"path"`
	Offset int64  `json:"offset"`
}

type checkpointFile struct {
	Version int          `json:"version"`
	Files   []Checkpoint `json:"files"`
}

// fingerprint hashes the first n bytes of f (FNV-1a 64). It returns the
// number of bytes hashed, which is less than n if the file is shorter.
func fingerprint(f io.ReaderAt, n int) (int, uint64, error) {
	buf := make([]byte, n)
	got, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, 0, err
	}
	h := fnv.New64a()
	h.Write(buf[:got])
	return got, h.Sum64(), nil
}

// ParseCheckpoints decodes a checkpoint file. Entries that make no sense
// (negative offsets, fingerprints longer than FingerprintBytes) are an
// error: the file is written atomically by us, so damage means something
// else wrote it.
func ParseCheckpoints(data []byte) ([]Checkpoint, error) {
	if len(data) > maxCheckpointFile {
		return nil, fmt.Errorf("checkpoints: %d bytes, over the limit", len(data))
	}
	var cf checkpointFile
	if err := json.Unmarshal(data, &cf); err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	if cf.Version != 1 {
		return nil, fmt.Errorf("checkpoints: version %d, want 1", cf.Version)
	}
	for i, c := range cf.Files {
		if c.Offset < 0 || c.FPLen < 0 || c.FPLen > FingerprintBytes {
			return nil, fmt.Errorf("checkpoints: entry %d (%s): offset %d, fingerprint length %d out of range", i, c.Path, c.Offset, c.FPLen)
		}
	}
	return cf.Files, nil
}

// FormatCheckpoints encodes checkpoints, sorted by path, for
// ParseCheckpoints.
func FormatCheckpoints(cps []Checkpoint) []byte {
	cps = slices.Clone(cps)
	slices.SortFunc(cps, func(a, b Checkpoint) int {
		return cmp.Or(cmp.Compare(a.Path, b.Path), cmp.Compare(a.Born, b.Born))
	})
	if cps == nil {
		cps = []Checkpoint{}
	}
	data, _ := json.MarshalIndent(checkpointFile{Version: 1, Files: cps}, "", " ")
	return append(data, '\n')
}

// ReadCheckpoints reads the checkpoint file at path; a missing file is no
// checkpoints.
func ReadCheckpoints(path string) ([]Checkpoint, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	cps, err := ParseCheckpoints(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cps, nil
}

// WriteCheckpoints replaces the checkpoint file at path atomically.
func WriteCheckpoints(path string, cps []Checkpoint) error {
	if err := atomicfile.WriteFile(path, FormatCheckpoints(cps), 0o644); err != nil {
		return fmt.Errorf("checkpoints: %w", err)
	}
	return nil
}
