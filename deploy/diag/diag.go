// Package diag runs diagnostic commands on request, as an operator would
// by hand, but only those of an allowlist: each entry names a fixed
// program and a pattern for every argument a caller may pass. Runs have a
// timeout and an output limit, their output is streamed back, and every
// run is audited.
package diag

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Command is one allowlist entry, as the agent config's `diagnostics:`
// section lists them.
type Command struct {
	Name string `yaml:"name" json:"name"`
	// Command is the program and its fixed arguments.
	Command []string `yaml:"command" json:"command"`
	// Args are patterns (anchored regular expressions), one per argument
	// a caller may add; a caller may give fewer.
	Args      []string      `yaml:"args" json:"args,omitempty"`
	Timeout   time.Duration `yaml:"timeout" json:"timeout,omitempty"`
	MaxOutput int64         `yaml:"max_output" json:"max_output,omitempty"`

	patterns []*regexp.Regexp
}

// Allowlist is the set of commands that may run.
type Allowlist struct {
	commands map[string]*Command
	audit    io.Writer
	mu       sync.Mutex
}

// New checks the entries and compiles their patterns. Audit records (one
// JSON line per run) go to audit.
func New(cmds []Command, audit io.Writer) (*Allowlist, error) {
	a := &Allowlist{commands: map[string]*Command{}, audit: audit}
	for i := range cmds {
		c := cmds[i]
		if c.Name == "" || len(c.Command) == 0 {
			return nil, fmt.Errorf("diagnostics[%d]: needs a name and a command", i)
		}
		if _, dup := a.commands[c.Name]; dup {
			return nil, fmt.Errorf("diagnostics: %s listed twice", c.Name)
		}
		for j, p := range c.Args {
			re, err := regexp.Compile("^(?:" + p + ")$")
			if err != nil {
				return nil, fmt.Errorf("diagnostics %s: args[%d]: %w", c.Name, j, err)
			}
			c.patterns = append(c.patterns, re)
		}
		if c.Timeout <= 0 {
			c.Timeout = 10 * time.Second
		}
		if c.MaxOutput <= 0 {
			c.MaxOutput = 1 << 20
		}
		a.commands[c.Name] = &c
	}
	return a, nil
}

// ErrNotAllowed is wrapped when a command or an argument is refused.
var ErrNotAllowed = errors.New("not allowed")

// Check returns the full argv for name and args, or why it is refused.
func (a *Allowlist) Check(name string, args []string) ([]string, *Command, error) {
	c, ok := a.commands[name]
	if !ok {
		return nil, nil, fmt.Errorf("%w: no diagnostic command %q", ErrNotAllowed, name)
	}
	if len(args) > len(c.patterns) {
		return nil, nil, fmt.Errorf("%w: %s takes at most %d arguments", ErrNotAllowed, name, len(c.patterns))
	}
	for i, arg := range args {
		if !c.patterns[i].MatchString(arg) {
			return nil, nil, fmt.Errorf("%w: %s argument %d %q does not match %s", ErrNotAllowed, name, i+1, arg, c.Args[i])
		}
	}
	return append(append([]string(nil), c.Command...), args...), c, nil
}

// Names lists the allowed commands.
func (a *Allowlist) Names() []Command {
	out := make([]Command, 0, len(a.commands))
	for _, c := range a.commands {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b Command) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// AuditRecord is one line of the audit log.
type AuditRecord struct {
	Time     time.Time `json:"time"`
	Caller   string    `json:"caller"`
	Name     string    `json:"name"`
	Argv     []string  `json:"argv,omitempty"`
	ExitCode int       `json:"exit_code"`
	Bytes    int64     `json:"bytes"`
	Error    string    `json:"error,omitempty"`
	Duration float64   `json:"duration_seconds"`
}

// Run runs an allowed command, streaming stdout and stderr into out (up
// to the entry's output limit), and audits the run, refused ones too.
func (a *Allowlist) Run(ctx context.Context, caller, name string, args []string, out io.Writer) (int, error) {
	began := time.Now()
	rec := AuditRecord{Time: began.UTC(), Caller: caller, Name: name, ExitCode: -1}
	defer func() {
		rec.Duration = time.Since(began).Seconds()
		a.writeAudit(rec)
	}()
	argv, c, err := a.Check(name, args)
	if err != nil {
		rec.Argv = append([]string{name}, args...)
		rec.Error = err.Error()
		return -1, err
	}
	rec.Argv = argv
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C.UTF-8"}
	lw := &limitWriter{w: out, left: c.MaxOutput}
	cmd.Stdout, cmd.Stderr = lw, lw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	rec.Bytes = lw.written
	if cmd.ProcessState != nil {
		rec.ExitCode = cmd.ProcessState.ExitCode()
	}
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		err = fmt.Errorf("%s timed out after %s", name, c.Timeout)
	case lw.cut:
		err = fmt.Errorf("%s: output cut at %d bytes", name, c.MaxOutput)
	}
	if err != nil {
		rec.Error = err.Error()
	}
	return rec.ExitCode, err
}

func (a *Allowlist) writeAudit(rec AuditRecord) {
	if a.audit == nil {
		return
	}
	b, _ := json.Marshal(rec)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.audit.Write(append(b, '\n'))
	if f, ok := a.audit.(*os.File); ok {
		f.Sync()
	}
}

// limitWriter passes on at most left bytes; a command that writes more is
// not killed for it, its excess output is dropped.
type limitWriter struct {
	mu      sync.Mutex
	w       io.Writer
	left    int64
	written int64
	cut     bool
}

func (l *limitWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := int64(len(p))
	if n > l.left {
		p = p[:l.left]
		l.cut = true
	}
	if len(p) > 0 {
		m, err := l.w.Write(p)
		l.written += int64(m)
		l.left -= int64(m)
		if f, ok := l.w.(interface{ Flush() }); ok {
			f.Flush()
		}
		if err != nil {
			return m, err
		}
	}
	return int(n), nil
}
