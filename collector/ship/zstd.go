package ship

import (
	"bytes"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kgo"
)

// zstdCompressor compresses record batches with zstd at its fastest level,
// like the client's own zstd codec but without the frame checksum: a
// record batch carries its own CRC over the compressed bytes, and libzstd
// (librdkafka's) writes no checksum by default either. Hashing every byte
// a second time was about 1 % of the CPU of shipping logs.
type zstdCompressor struct {
	encoders sync.Pool // of *zstd.Encoder; Compress runs on every broker's goroutine
}

func newZstdCompressor() *zstdCompressor {
	return &zstdCompressor{encoders: sync.Pool{New: func() any {
		// The options cannot fail: they are constants.
		enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(64<<10), zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false))
		return enc
	}}}
}

// Compress implements kgo.Compressor. A broker too old for zstd gets the
// batch uncompressed.
func (c *zstdCompressor) Compress(dst *bytes.Buffer, src []byte, flags ...kgo.CompressFlag) ([]byte, kgo.CompressionCodecType) {
	for _, f := range flags {
		if f == kgo.CompressDisableZstd {
			return src, kgo.CodecNone
		}
	}
	enc := c.encoders.Get().(*zstd.Encoder)
	defer c.encoders.Put(enc)
	if n := enc.MaxEncodedSize(len(src)); n > dst.Cap() {
		dst.Grow(n)
	}
	return enc.EncodeAll(src, dst.Bytes()[:0]), kgo.CodecZstd
}
