// Package release installs application releases on a host: it verifies a
// package (sha256, optional ed25519 signature), unpacks it safely into
// <root>/<app>/releases/<version>, switches <root>/<app>/current
// atomically, keeps the last N releases and rolls back.
package release

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Limits bound what one archive may expand to. Zero fields take the defaults.
type Limits struct {
	// MaxBytes is the most bytes all files together may hold once unpacked.
	MaxBytes int64
	// MaxFiles is the most entries (files, directories, links).
	MaxFiles int
}

// Default limits: generous for an application, small enough that a zip
// bomb fills neither the disk nor the inode table.
const (
	DefaultMaxBytes = 4 << 30
	DefaultMaxFiles = 200_000
)

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

// ErrUnsafeArchive is wrapped by every refusal of an entry that would write
// outside the release or exceed the limits.
var ErrUnsafeArchive = errors.New("unsafe archive")

// Format is an archive format, detected from the first bytes.
type Format string

// Supported formats.
const (
	TarGzip Format = "tar.gz"
	TarZstd Format = "tar.zst"
	Zip     Format = "zip"
)

// DetectFormat reads the magic number at the start of r.
func DetectFormat(head []byte) (Format, error) {
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return TarGzip, nil
	case len(head) >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd:
		return TarZstd, nil
	case len(head) >= 4 && string(head[:4]) == "PK\x03\x04":
		return Zip, nil
	}
	return "", errors.New("unknown package format: want tar.gz, tar.zst or zip")
}

// Stats says what an unpack wrote.
type Stats struct {
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
}

// UnpackFile unpacks the archive at src into dest, which must not exist
// yet; it is created with mode 0755. On error dest may hold part of the
// archive: callers unpack into a temporary directory and rename it.
func UnpackFile(src, dest string, lim Limits) (Stats, error) {
	f, err := os.Open(src)
	if err != nil {
		return Stats{}, err
	}
	defer f.Close()
	head := make([]byte, 4)
	n, _ := io.ReadFull(f, head)
	format, err := DetectFormat(head[:n])
	if err != nil {
		return Stats{}, fmt.Errorf("%s: %w", src, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Stats{}, err
	}
	if err := os.Mkdir(dest, 0o755); err != nil {
		return Stats{}, err
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return Stats{}, err
	}
	defer root.Close()
	u := &unpacker{root: root, lim: lim.withDefaults()}
	switch format {
	case TarGzip:
		zr, err := gzip.NewReader(bufio.NewReaderSize(f, 1<<20))
		if err != nil {
			return Stats{}, fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		err = u.tar(zr)
		return u.stats, err
	case TarZstd:
		zr, err := zstd.NewReader(bufio.NewReaderSize(f, 1<<20), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(64<<20))
		if err != nil {
			return Stats{}, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		err = u.tar(zr)
		return u.stats, err
	default:
		st, err := f.Stat()
		if err != nil {
			return Stats{}, err
		}
		zr, err := zip.NewReader(f, st.Size())
		if err != nil {
			return Stats{}, fmt.Errorf("zip: %w", err)
		}
		err = u.zip(zr)
		return u.stats, err
	}
}

// unpacker writes entries through an os.Root, which refuses any path that
// leaves the release even through a symlink an earlier entry created; the
// checks here come first so that the refusal names the entry and reason.
type unpacker struct {
	root  *os.Root
	lim   Limits
	stats Stats
	// realDirs are directories checked not to be symlinks.
	realDirs map[string]bool
}

// checkParents refuses an entry whose parent path goes through a symlink:
// the lexical link checks hold only when every parent is a real directory.
func (u *unpacker) checkParents(name string) error {
	if u.realDirs == nil {
		u.realDirs = map[string]bool{}
	}
	dir := path.Dir(name)
	var todo []string
	for ; dir != "." && dir != "/" && !u.realDirs[dir]; dir = path.Dir(dir) {
		todo = append(todo, dir)
	}
	for i := len(todo) - 1; i >= 0; i-- {
		st, err := u.root.Lstat(todo[i])
		if errors.Is(err, fs.ErrNotExist) {
			return nil // created below as real directories
		}
		if err != nil {
			return fmt.Errorf("%w: %q: %v", ErrUnsafeArchive, name, err)
		}
		if !st.IsDir() {
			return fmt.Errorf("%w: entry %q goes through %q, which is a link or a file", ErrUnsafeArchive, name, todo[i])
		}
		u.realDirs[todo[i]] = true
	}
	return nil
}

// cleanName validates an entry name and returns it relative to the release
// root, or "" for the root itself.
func cleanName(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: empty or NUL in entry name %q", ErrUnsafeArchive, name)
	}
	if strings.HasPrefix(name, "/") || filepath.IsAbs(name) || (len(name) > 1 && name[1] == ':') {
		return "", fmt.Errorf("%w: absolute path %q", ErrUnsafeArchive, name)
	}
	for _, part := range strings.Split(strings.ReplaceAll(name, "\\", "/"), "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: path traversal in %q", ErrUnsafeArchive, name)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// insideTarget checks that a link at name pointing to target stays in the
// release. Absolute targets are refused: the release moves once unpacked.
func insideTarget(name, target string) error {
	if target == "" || strings.HasPrefix(target, "/") || strings.ContainsRune(target, 0) {
		return fmt.Errorf("%w: link %q points outside the release (%q)", ErrUnsafeArchive, name, target)
	}
	resolved := path.Join(path.Dir(name), target)
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return fmt.Errorf("%w: link %q points outside the release (%q)", ErrUnsafeArchive, name, target)
	}
	return nil
}

func (u *unpacker) count(name string) error {
	u.stats.Files++
	if u.stats.Files > u.lim.MaxFiles {
		return fmt.Errorf("%w: more than %d entries (at %q)", ErrUnsafeArchive, u.lim.MaxFiles, name)
	}
	return nil
}

func (u *unpacker) mkdirAll(name string, mode fs.FileMode) error {
	if name == "" {
		return nil
	}
	if err := u.root.MkdirAll(name, 0o755); err != nil {
		return fmt.Errorf("%q: %w", name, err)
	}
	if mode != 0 {
		return u.root.Chmod(name, mode.Perm()|0o700)
	}
	return nil
}

// writeFile copies at most the remaining byte budget; a declared size is not
// trusted (zip headers and compressed streams can lie).
func (u *unpacker) writeFile(name string, mode fs.FileMode, r io.Reader) error {
	if err := u.mkdirAll(path.Dir(name), 0); err != nil && path.Dir(name) != "." {
		return err
	}
	f, err := u.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode.Perm()&0o777|0o600)
	if err != nil {
		return fmt.Errorf("%q: %w", name, err)
	}
	left := u.lim.MaxBytes - u.stats.Bytes
	n, err := io.Copy(f, io.LimitReader(r, left+1))
	u.stats.Bytes += n
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%q: %w", name, err)
	}
	if n > left {
		return fmt.Errorf("%w: more than %d bytes unpacked (at %q)", ErrUnsafeArchive, u.lim.MaxBytes, name)
	}
	// Keep the archive's permissions (OpenFile applies the umask).
	return u.root.Chmod(name, mode.Perm()&0o777|0o600)
}

func (u *unpacker) tar(r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("tar: %w", err)
		}
		if err := u.count(h.Name); err != nil {
			return err
		}
		name, err := cleanName(h.Name)
		if err != nil {
			return err
		}
		if err := u.checkParents(name); err != nil {
			return err
		}
		mode := h.FileInfo().Mode()
		switch h.Typeflag {
		case tar.TypeDir:
			err = u.mkdirAll(name, mode)
		case tar.TypeReg, tar.TypeRegA:
			if name == "" {
				return fmt.Errorf("%w: file entry names the release root", ErrUnsafeArchive)
			}
			err = u.writeFile(name, mode, tr)
		case tar.TypeSymlink:
			if err := insideTarget(name, h.Linkname); err != nil {
				return err
			}
			if err := u.mkdirAll(path.Dir(name), 0); err != nil && path.Dir(name) != "." {
				return err
			}
			err = u.root.Symlink(h.Linkname, name)
		case tar.TypeLink:
			target, terr := cleanName(h.Linkname)
			if terr != nil || target == "" {
				return fmt.Errorf("%w: hard link %q to %q outside the release", ErrUnsafeArchive, h.Name, h.Linkname)
			}
			// Hard links may only name a regular file already unpacked:
			// Root.Link refuses to go through symlinks out of the root.
			st, serr := u.root.Lstat(target)
			if serr != nil || !st.Mode().IsRegular() {
				return fmt.Errorf("%w: hard link %q to %q, which is not a file of the release", ErrUnsafeArchive, h.Name, h.Linkname)
			}
			err = u.root.Link(target, name)
		case tar.TypeXGlobalHeader:
			continue
		default:
			return fmt.Errorf("%w: entry %q of type %q (devices and fifos are not allowed)", ErrUnsafeArchive, h.Name, string(h.Typeflag))
		}
		if err != nil {
			if errors.Is(err, ErrUnsafeArchive) {
				return err
			}
			return fmt.Errorf("%w: %v", ErrUnsafeArchive, err)
		}
	}
}

func (u *unpacker) zip(zr *zip.Reader) error {
	for _, f := range zr.File {
		if err := u.count(f.Name); err != nil {
			return err
		}
		name, err := cleanName(f.Name)
		if err != nil {
			return err
		}
		if err := u.checkParents(name); err != nil {
			return err
		}
		mode := f.Mode()
		switch {
		case mode.IsDir():
			err = u.mkdirAll(name, mode)
		case mode&fs.ModeSymlink != 0:
			var target []byte
			rc, oerr := f.Open()
			if oerr != nil {
				return fmt.Errorf("zip %q: %w", f.Name, oerr)
			}
			target, err = io.ReadAll(io.LimitReader(rc, 4096))
			rc.Close()
			if err != nil {
				return fmt.Errorf("zip %q: %w", f.Name, err)
			}
			if err := insideTarget(name, string(target)); err != nil {
				return err
			}
			if err := u.mkdirAll(path.Dir(name), 0); err != nil && path.Dir(name) != "." {
				return err
			}
			err = u.root.Symlink(string(target), name)
		case mode.IsRegular():
			if name == "" {
				return fmt.Errorf("%w: file entry names the release root", ErrUnsafeArchive)
			}
			rc, oerr := f.Open()
			if oerr != nil {
				return fmt.Errorf("zip %q: %w", f.Name, oerr)
			}
			err = u.writeFile(name, mode, rc)
			rc.Close()
		default:
			return fmt.Errorf("%w: entry %q of mode %v (devices and fifos are not allowed)", ErrUnsafeArchive, f.Name, mode)
		}
		if err != nil {
			if errors.Is(err, ErrUnsafeArchive) {
				return err
			}
			return fmt.Errorf("%w: %v", ErrUnsafeArchive, err)
		}
	}
	return nil
}
