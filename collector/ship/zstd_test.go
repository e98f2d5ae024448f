package ship

import (
	"bytes"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestZstdCompressor(t *testing.T) {
	c := newZstdCompressor()
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	cases := []struct {
		name  string
		src   []byte
		flags []kgo.CompressFlag
		codec kgo.CompressionCodecType
	}{
		{"log lines", bytes.Repeat([]byte(`10.0.0.1 - - "GET /api/v1/orders HTTP/1.1" 200 512`+"\n"), 5000), nil, kgo.CodecZstd},
		{"empty", nil, nil, kgo.CodecZstd},
		{"broker without zstd", []byte("abc"), []kgo.CompressFlag{kgo.CompressDisableZstd}, kgo.CodecNone},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var dst bytes.Buffer
			out, codec := c.Compress(&dst, tc.src, tc.flags...)
			if codec != tc.codec {
				t.Fatalf("codec %d, want %d", codec, tc.codec)
			}
			if codec == kgo.CodecNone {
				if !bytes.Equal(out, tc.src) {
					t.Fatal("uncompressed batch changed")
				}
				return
			}
			if len(tc.src) > 1000 && len(out) > len(tc.src)/10 {
				t.Errorf("%d bytes compressed to %d", len(tc.src), len(out))
			}
			back, err := dec.DecodeAll(out, nil)
			if err != nil || !bytes.Equal(back, tc.src) {
				t.Fatalf("round trip: %v (%d bytes back of %d)", err, len(back), len(tc.src))
			}
		})
	}
}
