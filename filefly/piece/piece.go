// Package piece is filefly's piece model: a file is cut into fixed-size
// pieces, each with its own sha256, so every relay can verify a piece the
// moment it arrives and forward it at once, and the whole file has a sha256
// checked before it is put in place.
package piece

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Piece size bounds. Large files get 4–64 MiB pieces (as Dragonfly does);
// small files smaller ones so that a relay tree still pipelines.
const (
	MinSize = 256 << 10
	MaxSize = 64 << 20
	// targetPieces is how many pieces a file is cut into at least, until
	// the pieces reach MaxSize.
	targetPieces = 64
)

// SizeFor returns the piece size for a file of size bytes: the smallest
// power of two giving at most targetPieces pieces, within [MinSize, MaxSize].
func SizeFor(size int64) int64 {
	ps := int64(MinSize)
	for ps < MaxSize && ps*targetPieces < size {
		ps *= 2
	}
	return ps
}

// Manifest describes a file as pieces.
type Manifest struct {
	Size      int64    `json:"size"`
	PieceSize int64    `json:"piece_size"`
	SHA256    string   `json:"sha256"`
	Pieces    []string `json:"pieces"` // hex sha256 of each piece, in order
}

// Count is the number of pieces.
func (m *Manifest) Count() int { return len(m.Pieces) }

// Span returns the offset and length of piece n.
func (m *Manifest) Span(n int) (off, length int64) {
	off = int64(n) * m.PieceSize
	length = m.PieceSize
	if off+length > m.Size {
		length = m.Size - off
	}
	return off, length
}

// Validate checks that the manifest is self-consistent, so that a decoded
// one from the wire can be trusted for offsets.
func (m *Manifest) Validate() error {
	if m.Size < 0 {
		return errors.New("manifest: negative size")
	}
	if m.PieceSize < 1 || m.PieceSize > MaxSize {
		return fmt.Errorf("manifest: piece size %d out of range", m.PieceSize)
	}
	want := (m.Size + m.PieceSize - 1) / m.PieceSize
	if int64(len(m.Pieces)) != want {
		return fmt.Errorf("manifest: %d pieces, want %d for %d bytes", len(m.Pieces), want, m.Size)
	}
	if !isHexSum(m.SHA256) {
		return errors.New("manifest: sha256 is not 64 hex digits")
	}
	for i, p := range m.Pieces {
		if !isHexSum(p) {
			return fmt.Errorf("manifest: piece %d sha256 is not 64 hex digits", i)
		}
	}
	return nil
}

// Check reports whether data is piece n.
func (m *Manifest) Check(n int, data []byte) error {
	if n < 0 || n >= len(m.Pieces) {
		return fmt.Errorf("piece %d out of range", n)
	}
	if _, length := m.Span(n); int64(len(data)) != length {
		return fmt.Errorf("piece %d: %d bytes, want %d", n, len(data), length)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != m.Pieces[n] {
		return fmt.Errorf("piece %d: sha256 mismatch", n)
	}
	return nil
}

// CheckSum reports whether sum, the hex sha256 of a whole piece n taken
// as its bytes arrived, is piece n's.
func (m *Manifest) CheckSum(n int, sum string) error {
	if n < 0 || n >= len(m.Pieces) {
		return fmt.Errorf("piece %d out of range", n)
	}
	if sum != m.Pieces[n] {
		return fmt.Errorf("piece %d: sha256 mismatch", n)
	}
	return nil
}

// Compute reads a file of size bytes from r and returns its manifest.
func Compute(r io.Reader, size int64) (Manifest, error) {
	m := Manifest{Size: size, PieceSize: SizeFor(size)}
	whole := sha256.New()
	buf := make([]byte, m.PieceSize)
	var read int64
	for read < size {
		n := m.PieceSize
		if size-read < n {
			n = size - read
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return Manifest{}, fmt.Errorf("read at %d: %w", read, err)
		}
		sum := sha256.Sum256(buf[:n])
		m.Pieces = append(m.Pieces, hex.EncodeToString(sum[:]))
		whole.Write(buf[:n])
		read += n
	}
	m.SHA256 = hex.EncodeToString(whole.Sum(nil))
	return m, nil
}

// HashFile returns the hex sha256 of everything r yields.
func HashFile(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func isHexSum(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Bitmap records which pieces a holder has.
type Bitmap []byte

// NewBitmap returns an empty bitmap for n pieces.
func NewBitmap(n int) Bitmap { return make(Bitmap, (n+7)/8) }

// Has reports whether piece i is set.
func (b Bitmap) Has(i int) bool { return i >= 0 && i/8 < len(b) && b[i/8]&(1<<(i%8)) != 0 }

// Set marks piece i.
func (b Bitmap) Set(i int) { b[i/8] |= 1 << (i % 8) }

// Clear unmarks piece i.
func (b Bitmap) Clear(i int) { b[i/8] &^= 1 << (i % 8) }

// Count returns how many of the first n pieces are set.
func (b Bitmap) Count(n int) int {
	c := 0
	for i := 0; i < n; i++ {
		if b.Has(i) {
			c++
		}
	}
	return c
}
