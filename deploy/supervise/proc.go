package supervise

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procStat is what the agent reads from /proc/PID/stat.
type procStat struct {
	PID   int
	State byte
	PPID  int
	PGID  int
	// StartTicks is the process start time in clock ticks after boot: with
	// the pid it names one process, even after the pid is reused.
	StartTicks uint64
}

// readProcStat parses /proc/PID/stat.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(b)
}

// parseProcStat parses one /proc/PID/stat line. The command name may hold
// spaces and parentheses, so fields are counted after the last ')'.
func parseProcStat(b []byte) (procStat, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 1 || end < open {
		return procStat{}, errors.New("stat: no command in parentheses")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:open])))
	if err != nil {
		return procStat{}, fmt.Errorf("stat pid: %w", err)
	}
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3 (state); start time is field 22.
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, errors.New("stat: too few fields")
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgid, err2 := strconv.Atoi(f[2])
	start, err3 := strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procStat{}, fmt.Errorf("stat: %w", err)
	}
	return procStat{PID: pid, State: f[0][0], PPID: ppid, PGID: pgid, StartTicks: start}, nil
}

// alive reports whether pid is still the process that started at ticks
// (and is not a zombie).
func alive(pid int, ticks uint64) bool {
	st, err := readProcStat(pid)
	return err == nil && st.StartTicks == ticks && st.State != 'Z' && st.State != 'X'
}

// allProcs lists every process's stat.
func allProcs() []procStat {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make([]procStat, 0, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readProcStat(pid); err == nil {
			out = append(out, st)
		}
	}
	return out
}

// descendants returns the processes below pid, including those that left
// its process group or session.
func descendants(pid int) []procStat {
	procs := allProcs()
	children := map[int][]procStat{}
	for _, p := range procs {
		children[p.PPID] = append(children[p.PPID], p)
	}
	var out []procStat
	todo := []int{pid}
	for len(todo) > 0 {
		next := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		for _, c := range children[next] {
			out = append(out, c)
			todo = append(todo, c.PID)
		}
	}
	return out
}

// BecomeSubreaper makes orphaned descendants of the agent's programs its
// own children, so that it can kill and reap them instead of init.
func BecomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// reapOrphans waits for zombie children nobody else waits for: a zombie
// seen in two scans in a row is not one of the agent's own commands
// (whose Wait runs at once) but an orphan reparented to the subreaper.
func reapOrphans(seen map[int]uint64) int {
	self := os.Getpid()
	now := map[int]uint64{}
	reaped := 0
	for _, p := range allProcs() {
		if p.PPID != self || p.State != 'Z' {
			continue
		}
		if ticks, ok := seen[p.PID]; ok && ticks == p.StartTicks {
			var ws syscall.WaitStatus
			if n, _ := syscall.Wait4(p.PID, &ws, syscall.WNOHANG, nil); n == p.PID {
				reaped++
			}
			continue
		}
		now[p.PID] = p.StartTicks
	}
	clear(seen)
	for k, v := range now {
		seen[k] = v
	}
	return reaped
}

// killTree sends sig to the process group and to each recorded descendant
// still alive (checked by start time, so a reused pid is spared).
func killTree(pgid int, procs []procStat, sig syscall.Signal) {
	if pgid > 0 {
		_ = syscall.Kill(-pgid, sig)
	}
	for _, p := range procs {
		if alive(p.PID, p.StartTicks) {
			_ = syscall.Kill(p.PID, sig)
		}
	}
}

// sleepTicks is how often adopted processes, which are not the agent's
// children, are checked for life.
const defaultPoll = 200 * time.Millisecond
