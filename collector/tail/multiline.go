package tail

import (
	"fmt"
	"regexp"
	"time"
)

// Multiline joins physical lines into one event, e.g. a Java stack trace
// under the line that logged it.
type Multiline struct {
	// Pattern is a regular expression (RE2) tested against each line.
	Pattern string `yaml:"pattern"`
	// Match says what a line matching Pattern is: "start" (it begins a new
	// event; other lines continue the current one) or "continuation" (it
	// continues the current event; other lines begin a new one).
	Match string `yaml:"match"`
	// FlushTimeout ends an event that got no line for this long (default 1s).
	FlushTimeout time.Duration `yaml:"flush_timeout"`
	// MaxBytes bounds one event (default: the input's max line bytes);
	// beyond it the event is cut and marked truncated.
	MaxBytes int `yaml:"max_bytes"`
	// MaxLines bounds the lines of one event (default 500).
	MaxLines int `yaml:"max_lines"`
}

// Chunk is a run of bytes of a file that becomes one event: a line, or
// several joined with "\n". Start is the offset of its first byte; End the
// offset just past its last newline (where reading resumes after it).
type Chunk struct {
	Text      []byte
	Start     int64
	End       int64
	Truncated bool
}

// Assembler applies a Multiline rule to one file's lines. Its zero value
// is not usable; see NewAssembler. Not safe for concurrent use.
type Assembler struct {
	re          *regexp.Regexp
	startsEvent bool
	timeout     time.Duration
	maxBytes    int
	maxLines    int

	cur     Chunk
	lines   int
	pending bool
	last    time.Time
}

// NewAssembler checks the rule and returns an assembler for it.
// defaultMaxBytes applies when the rule gives none.
func NewAssembler(m Multiline, defaultMaxBytes int) (*Assembler, error) {
	re, err := regexp.Compile(m.Pattern)
	if err != nil {
		return nil, fmt.Errorf("multiline pattern: %w", err)
	}
	if m.Pattern == "" {
		return nil, fmt.Errorf("multiline: pattern is empty")
	}
	a := &Assembler{re: re, timeout: m.FlushTimeout, maxBytes: m.MaxBytes, maxLines: m.MaxLines}
	switch m.Match {
	case "start", "":
		a.startsEvent = true
	case "continuation":
	default:
		return nil, fmt.Errorf("multiline match %q: want start or continuation", m.Match)
	}
	if a.timeout <= 0 {
		a.timeout = time.Second
	}
	if a.maxBytes <= 0 {
		a.maxBytes = defaultMaxBytes
	}
	if a.maxBytes <= 0 {
		a.maxBytes = 1 << 20
	}
	if a.maxLines <= 0 {
		a.maxLines = 500
	}
	return a, nil
}

// Add takes the next line and returns the event it completed, if any. The
// line's bytes are copied.
func (a *Assembler) Add(c Chunk, now time.Time) (Chunk, bool) {
	matches := a.re.Match(c.Text)
	begins := matches == a.startsEvent
	var out Chunk
	var done bool
	if a.pending && (begins || a.lines >= a.maxLines) {
		out, done = a.take()
	}
	if !a.pending {
		a.cur = Chunk{Text: append([]byte(nil), c.Text...), Start: c.Start, End: c.End, Truncated: c.Truncated}
		if len(a.cur.Text) > a.maxBytes {
			a.cur.Text, a.cur.Truncated = a.cur.Text[:a.maxBytes], true
		}
		a.pending, a.lines = true, 1
	} else {
		if room := a.maxBytes - len(a.cur.Text) - 1; room >= 0 && !a.cur.Truncated {
			a.cur.Text = append(a.cur.Text, '\n')
			add := c.Text
			if len(add) > room {
				add, a.cur.Truncated = add[:room], true
			}
			a.cur.Text = append(a.cur.Text, add...)
		} else {
			a.cur.Truncated = true
		}
		a.cur.Truncated = a.cur.Truncated || c.Truncated
		a.cur.End = c.End
		a.lines++
	}
	a.last = now
	return out, done
}

// Due reports whether the pending event has waited its flush timeout.
func (a *Assembler) Due(now time.Time) bool {
	return a.pending && now.Sub(a.last) >= a.timeout
}

// Flush returns the pending event, if any.
func (a *Assembler) Flush() (Chunk, bool) {
	if !a.pending {
		return Chunk{}, false
	}
	return a.take()
}

// Pending reports whether lines wait in the assembler.
func (a *Assembler) Pending() bool { return a.pending }

func (a *Assembler) take() (Chunk, bool) {
	out := a.cur
	a.cur, a.pending, a.lines = Chunk{}, false, 0
	return out, true
}
