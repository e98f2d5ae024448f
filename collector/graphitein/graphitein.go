// Package graphitein is collector's Graphite plaintext intake for
// applications on the host: "path value [timestamp]" lines (tagged paths
// "path;k=v" too) over TCP and UDP, parsed with transfer's Graphite parser.
// Points go to a sink.Batcher; the host's endpoint is added when they are
// spooled, unless a tag "endpoint" names another.
package graphitein

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/opskit/opskit/collector/sink"
	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/graphite"
)

// ProtoTCP and ProtoUDP are the "proto" labels of this intake's counters.
const (
	ProtoTCP = "graphite_tcp"
	ProtoUDP = "graphite_udp"
)

// Config tunes the listeners. Zero fields take the defaults.
type Config struct {
	// MaxConns bounds concurrent TCP connections (default 256).
	MaxConns int
	// MaxLineBytes bounds one line (default 32 KiB).
	MaxLineBytes int
	// IdleTimeout closes a TCP connection silent this long (default 5 min).
	IdleTimeout time.Duration
	// Limits bound series as transfer does.
	Limits intake.Limits
}

func (c Config) withDefaults() Config {
	if c.MaxConns <= 0 {
		c.MaxConns = 256
	}
	if c.MaxLineBytes <= 0 {
		c.MaxLineBytes = 32 << 10
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	c.Limits = c.Limits.WithDefaults()
	return c
}

// Server reads Graphite lines and hands the points to batchers.
type Server struct {
	cfg      Config
	tcp, udp *sink.Batcher
	counters *sink.Counters
	log      *slog.Logger
	now      func() time.Time
}

// New returns a server adding TCP points to tcp and UDP points to udp (the
// batchers count what they receive).
func New(cfg Config, tcp, udp *sink.Batcher, counters *sink.Counters, log *slog.Logger) *Server {
	return &Server{cfg: cfg.withDefaults(), tcp: tcp, udp: udp, counters: counters, log: log, now: time.Now}
}

// lineReader parses lines into points for one connection or socket.
type lineReader struct {
	s      *Server
	proto  string
	parser *graphite.Parser
	peer   string
}

func (s *Server) newLineReader(proto, peer string) *lineReader {
	return &lineReader{s: s, proto: proto, parser: graphite.NewParser(s.cfg.Limits, 0), peer: peer}
}

// line parses one line; it returns the point and true, or counts the
// rejection and returns false.
func (r *lineReader) line(line []byte, lineNo int) (metric.Point, bool) {
	if graphite.IsBlank(line) {
		return metric.Point{}, false
	}
	p, rej := r.parser.ParseLine(line, r.s.now().Unix())
	if rej != nil {
		r.s.counters.Rejected(r.proto, rej.Reason, rej.Detail, r.peer+" line "+strconv.Itoa(lineNo))
		return metric.Point{}, false
	}
	return p, true
}

// ServeTCP accepts connections on ln until ctx ends.
func (s *Server) ServeTCP(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		active = map[net.Conn]bool{}
	)
	defer func() {
		mu.Lock()
		for c := range active {
			// Unblock readers; what they read is already in the batcher.
			c.SetReadDeadline(time.Now())
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("graphite tcp accept: %w", err)
			}
			s.log.Warn("graphite accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		mu.Lock()
		if len(active) >= s.cfg.MaxConns {
			mu.Unlock()
			s.counters.Rejected(ProtoTCP, "too_many_connections", "connection refused", conn.RemoteAddr().String())
			conn.Close()
			continue
		}
		active[conn] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, conn)
			mu.Lock()
			delete(active, conn)
			mu.Unlock()
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	r := s.newLineReader(ProtoTCP, conn.RemoteAddr().String())
	br := bufio.NewReaderSize(conn, 64<<10)
	var batch []metric.Point
	lineNo := 0
	for ctx.Err() == nil {
		conn.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		line, tooLong, err := readLine(br, s.cfg.MaxLineBytes)
		if len(line) > 0 || tooLong {
			lineNo++
			if tooLong {
				s.counters.Rejected(ProtoTCP, intake.ReasonTooLong, fmt.Sprintf("line over %d bytes", s.cfg.MaxLineBytes), r.peer)
			} else if p, ok := r.line(line, lineNo); ok {
				batch = append(batch, p)
			}
		}
		// Hand over what was read before the next read can block (no whole
		// line is buffered), so a quiet connection does not hold points back.
		if len(batch) >= 1000 || (len(batch) > 0 && (err != nil || !wholeLineBuffered(br))) {
			s.tcp.Add(batch...)
			batch = batch[:0]
		}
		if err != nil {
			return
		}
	}
}

func wholeLineBuffered(br *bufio.Reader) bool {
	buffered, _ := br.Peek(br.Buffered())
	return bytes.IndexByte(buffered, '\n') >= 0
}

// readLine reads one line without its newline. A line over max bytes is
// skipped up to its newline and reported as tooLong. At EOF a final line
// without newline is returned with the error.
func readLine(br *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(buf)+len(chunk) > max+1 {
			tooLong = true
			buf = buf[:0]
		} else if !tooLong {
			buf = append(buf, chunk...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if tooLong {
			return nil, true, err
		}
		return bytes.TrimSuffix(buf, []byte{'\n'}), false, err
	}
}

// ServeUDP reads datagrams of lines from conn until ctx ends.
func (s *Server) ServeUDP(ctx context.Context, conn net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r := s.newLineReader(ProtoUDP, "udp")
	buf := make([]byte, 65536)
	var batch []metric.Point
	for {
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			continue
		}
		r.peer = peer.String()
		batch = r.datagram(buf[:n], batch[:0])
		s.udp.Add(batch...)
	}
}

// datagram parses the lines of one datagram, appending the points to dst.
func (r *lineReader) datagram(gram []byte, dst []metric.Point) []metric.Point {
	lineNo := 0
	for len(gram) > 0 {
		line := gram
		if i := bytes.IndexByte(gram, '\n'); i >= 0 {
			line, gram = gram[:i], gram[i+1:]
		} else {
			gram = nil
		}
		lineNo++
		if p, ok := r.line(line, lineNo); ok {
			dst = append(dst, p)
		}
	}
	return dst
}
