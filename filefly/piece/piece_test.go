package piece

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"testing"
)

func TestSizeFor(t *testing.T) {
	tests := []struct {
		size int64
		want int64
	}{
		{0, MinSize},
		{1, MinSize},
		{64 * MinSize, MinSize},
		{64*MinSize + 1, 2 * MinSize},
		{50 << 20, 1 << 20},
		{1 << 30, 16 << 20},
		{3 << 30, 64 << 20},
		{100 << 30, MaxSize},
	}
	for _, tt := range tests {
		if got := SizeFor(tt.size); got != tt.want {
			t.Errorf("SizeFor(%d) = %d, want %d", tt.size, got, tt.want)
		}
	}
}

func TestComputeAndCheck(t *testing.T) {
	for _, size := range []int64{0, 1, MinSize - 1, MinSize, 3*MinSize + 7} {
		data := make([]byte, size)
		rand.Read(data)
		m, err := Compute(bytes.NewReader(data), size)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		total := int64(0)
		for n := 0; n < m.Count(); n++ {
			off, length := m.Span(n)
			if err := m.Check(n, data[off:off+length]); err != nil {
				t.Errorf("size %d: %v", size, err)
			}
			bad := bytes.Clone(data[off : off+length])
			bad[0] ^= 1
			if m.Check(n, bad) == nil {
				t.Errorf("size %d piece %d: corrupted piece passed", size, n)
			}
			if m.Check(n, data[off:off+length-1]) == nil {
				t.Errorf("size %d piece %d: short piece passed", size, n)
			}
			total += length
		}
		if total != size {
			t.Errorf("size %d: pieces cover %d bytes", size, total)
		}
		sum, _, _ := HashFile(bytes.NewReader(data))
		if sum != m.SHA256 {
			t.Errorf("size %d: whole sha256 differs", size)
		}
	}
	if _, err := Compute(bytes.NewReader(make([]byte, 10)), 20); err == nil {
		t.Error("short input: no error")
	}
}

func TestValidateRejects(t *testing.T) {
	good, _ := Compute(bytes.NewReader(make([]byte, 1000)), 1000)
	tests := map[string]func(m *Manifest){
		"negative size":     func(m *Manifest) { m.Size = -1 },
		"zero piece size":   func(m *Manifest) { m.PieceSize = 0 },
		"huge piece size":   func(m *Manifest) { m.PieceSize = MaxSize + 1 },
		"missing piece":     func(m *Manifest) { m.Pieces = nil },
		"extra piece":       func(m *Manifest) { m.Pieces = append(m.Pieces, m.Pieces[0]) },
		"bad whole sum":     func(m *Manifest) { m.SHA256 = "xyz" },
		"bad piece sum":     func(m *Manifest) { m.Pieces[0] = m.Pieces[0][:63] + "g" },
		"size beyond piece": func(m *Manifest) { m.Size = m.PieceSize + 1 },
	}
	for name, mutate := range tests {
		m := good
		m.Pieces = append([]string(nil), good.Pieces...)
		mutate(&m)
		if m.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestBitmap(t *testing.T) {
	b := NewBitmap(10)
	for _, i := range []int{0, 3, 9} {
		b.Set(i)
	}
	if !b.Has(3) || b.Has(4) || b.Has(10) || b.Has(-1) || b.Count(10) != 3 {
		t.Errorf("bitmap %08b", b)
	}
	b.Clear(3)
	if b.Has(3) || b.Count(10) != 2 {
		t.Errorf("after clear %08b", b)
	}
}

// FuzzManifest: a manifest decoded from the wire either fails Validate or
// gives spans that stay inside the file.
func FuzzManifest(f *testing.F) {
	m, _ := Compute(bytes.NewReader(make([]byte, 3*MinSize+5)), 3*MinSize+5)
	seed, _ := json.Marshal(m)
	f.Add(seed)
	f.Add([]byte(`{"size":0,"piece_size":1,"sha256":"","pieces":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Manifest
		if json.Unmarshal(b, &m) != nil || m.Validate() != nil {
			return
		}
		for n := 0; n < m.Count(); n++ {
			off, length := m.Span(n)
			if off < 0 || length <= 0 || off+length > m.Size {
				t.Fatalf("piece %d span %d+%d outside %d", n, off, length, m.Size)
			}
		}
		m.Check(0, nil)
	})
}

func BenchmarkCompute(b *testing.B) {
	data := make([]byte, 16<<20)
	rand.Read(data)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Compute(bytes.NewReader(data), int64(len(data))); err != nil {
			b.Fatal(err)
		}
	}
}
