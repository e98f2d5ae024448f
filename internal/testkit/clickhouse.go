package testkit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Timeouts for the ClickHouse server's life cycle. Startup is generous
// because the test machines share two cores between many test binaries.
const (
	clickhouseReadyTimeout = 60 * time.Second
	clickhouseStopTimeout  = 15 * time.Second
	clickhouseLogTailLines = 40
	clickhouseLaunchTries  = 3
)

// ClickHouseServer gives a test a ClickHouse server on loopback and a
// database of its own on it.
type ClickHouseServer struct {
	process  *clickhouseProcess
	database string
}

// NativeAddr returns the "127.0.0.1:PORT" of the native TCP protocol (the
// protocol opskit's ClickHouse writers use).
func (s *ClickHouseServer) NativeAddr() string { return s.process.nativeAddr }

// HTTPAddr returns the "127.0.0.1:PORT" of the HTTP interface.
func (s *ClickHouseServer) HTTPAddr() string { return s.process.httpAddr }

// Database returns the database this test owns: "default" on a server from
// ClickHouse, a fresh "t_<random>" one on a SharedClickHouse server.
func (s *ClickHouseServer) Database() string { return s.database }

// Conn opens a native-protocol connection to the server with the test's
// database as default; it is closed when the test ends.
func (s *ClickHouseServer) Conn(t testing.TB) driver.Conn {
	t.Helper()
	conn, err := openClickHouse(s.process.nativeAddr, s.database)
	if err != nil {
		t.Fatalf("testkit: connect to ClickHouse %s: %v", s.process.nativeAddr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Exec runs one statement in the test's database through the HTTP
// interface and fails the test if the server rejects it. It goes over HTTP
// so that any statement works, INSERT ... VALUES with literal rows
// included, which clickhouse-go's native Conn.Exec cannot send to 18.16 (see
// openClickHouse). Code that must run against 18.16 inserts with
// Conn.PrepareBatch.
func (s *ClickHouseServer) Exec(t testing.TB, query string) {
	t.Helper()
	if err := s.process.execHTTP(s.database, query); err != nil {
		t.Fatalf("testkit: ClickHouse exec %q: %v", query, err)
	}
}

// LogTail returns the last lines of the server's log, for failure messages.
func (s *ClickHouseServer) LogTail() string { return s.process.logTail(clickhouseLogTailLines) }

// ClickHouse starts a ClickHouse server of its own for this test, on free
// loopback ports and in a temporary directory, and stops it and removes the
// directory when the test ends. If the test failed, the tail of the server's
// log is added to the test output. Starting and stopping a server takes
// about a second, more on a busy machine: prefer SharedClickHouse unless the
// test stops, restarts or breaks the server.
//
// It needs Debian's clickhouse-server (or a current release's "clickhouse"
// binary); without it the test fails in CI and is skipped elsewhere.
func ClickHouse(t testing.TB) *ClickHouseServer {
	t.Helper()
	binary := requireClickHouse(t)
	process, err := launchClickHouse(binary)
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ClickHouse log tail:\n%s", process.logTail(clickhouseLogTailLines))
		}
		if err := process.stop(); err != nil {
			t.Errorf("testkit: %v", err)
		}
	})
	return &ClickHouseServer{process: process, database: "default"}
}

// requireClickHouse finds the server binary: Debian's clickhouse-server, or
// the single "clickhouse" binary of current releases run as "clickhouse
// server".
func requireClickHouse(t testing.TB) clickhouseBinary {
	t.Helper()
	if path, err := findBinary("clickhouse-server", debianBinaryDirs()); err == nil {
		return clickhouseBinary{path: path}
	}
	if path, err := findBinary("clickhouse", debianBinaryDirs()); err == nil {
		return clickhouseBinary{path: path, args: []string{"server"}}
	}
	missing(t, "clickhouse-server not found: apt-get install clickhouse-server (make test installs it)")
	return clickhouseBinary{}
}

// openClickHouse opens a native-protocol connection.
//
// Compatibility with ClickHouse 18.16.1 (Debian's package), checked against
// clickhouse-go v2.50 (see the tests that pin each point):
//   - The handshake negotiates down to the server's revision 54412 and the
//     client then encodes client info, queries and blocks in the old
//     layout: SELECT, DDL and PrepareBatch inserts work.
//   - Below revision 54429 settings travel as typed binary values, which the
//     client can only encode for int and bool settings. A string or float
//     setting (in Options.Settings or clickhouse.WithSettings) fails every
//     query with "query setting ... has unsupported data type", so pass only
//     int/bool settings. The client adds max_execution_time (an int) by
//     itself when the context has a deadline; the old server accepts it.
//   - Conn.Exec of INSERT ... VALUES hangs until the context's deadline: the
//     old server waits for data blocks after any INSERT. Use PrepareBatch.
func openClickHouse(nativeAddr, database string) (driver.Conn, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:             []string{nativeAddr},
		Auth:             clickhouse.Auth{Database: database, Username: "default"},
		DialTimeout:      5 * time.Second,
		MaxOpenConns:     4,
		MaxIdleConns:     2,
		ConnMaxLifetime:  time.Hour,
		ConnOpenStrategy: clickhouse.ConnOpenInOrder,
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", nativeAddr, err)
	}
	return conn, nil
}

// clickhouseBinary is how to run the server: a path and the arguments that
// come before ours.
type clickhouseBinary struct {
	path string
	args []string
}

// clickhouseProcess is one running ClickHouse server.
type clickhouseProcess struct {
	dir        string
	nativeAddr string
	httpAddr   string
	pid        int
	// exited is closed once the process has ended; waitErr is then its
	// exit status.
	exited  chan struct{}
	waitErr error
}

// launchClickHouse runs a server on fresh ports in a fresh directory and
// waits until it answers queries. A free port can be taken by someone else
// before the server binds it, so a server that exits early is tried again
// on new ports.
func launchClickHouse(binary clickhouseBinary) (*clickhouseProcess, error) {
	var errs []error
	for range clickhouseLaunchTries {
		process, err := launchClickHouseOnce(binary)
		if err == nil {
			return process, nil
		}
		errs = append(errs, err)
		if !errors.Is(err, errClickHouseExited) {
			break
		}
	}
	return nil, errors.Join(errs...)
}

var errClickHouseExited = errors.New("clickhouse-server exited during startup")

func launchClickHouseOnce(binary clickhouseBinary) (*clickhouseProcess, error) {
	removeOrphanedClickHouseDirs()
	dir, err := os.MkdirTemp("", clickhouseDirPrefix)
	if err != nil {
		return nil, fmt.Errorf("clickhouse data dir: %w", err)
	}
	owner := []byte(strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(filepath.Join(dir, clickhouseOwnerFile), owner, 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("clickhouse owner file: %w", err)
	}
	nativePort, err := freeLoopbackPort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	httpPort, err := freeLoopbackPort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	process := &clickhouseProcess{
		dir:        dir,
		nativeAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(nativePort)),
		httpAddr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)),
		exited:     make(chan struct{}),
	}
	if err := writeClickHouseConfig(dir, nativePort, httpPort); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := process.run(binary); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := process.waitReady(clickhouseReadyTimeout); err != nil {
		tail := process.logTail(clickhouseLogTailLines)
		stopErr := process.stop()
		return nil, errors.Join(fmt.Errorf("%w\nlog tail:\n%s", err, tail), stopErr)
	}
	return process, nil
}

const (
	clickhouseDirPrefix = "opskit-clickhouse-"
	// clickhouseOwnerFile holds the pid of the test binary that made the
	// directory.
	clickhouseOwnerFile = "owner.pid"
)

// removeOrphanedClickHouseDirs removes server directories left behind by
// test binaries that were killed before their cleanup ran. Their servers
// died with them (see run), so only the files remain.
func removeOrphanedClickHouseDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), clickhouseDirPrefix+"*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, clickhouseOwnerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 {
			continue
		}
		if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			os.RemoveAll(dir)
		}
	}
}

// run starts the server process. The process gets SIGKILL if the test
// binary dies (a panic, a -timeout, a kill), so no server outlives the
// tests. Linux delivers that signal when the thread that forked the child
// ends, not the process, so the fork happens on a thread locked to a
// goroutine that lives exactly as long as the server.
func (p *clickhouseProcess) run(binary clickhouseBinary) error {
	args := append(append([]string{}, binary.args...), "--config-file="+filepath.Join(p.dir, "config.xml"))
	cmd := exec.Command(binary.path, args...)
	cmd.Dir = p.dir
	// Current releases put a watchdog process in front of the server; our
	// signals must reach the server itself.
	cmd.Env = append(os.Environ(), "CLICKHOUSE_WATCHDOG_ENABLE=0")
	console, err := os.Create(filepath.Join(p.dir, "console.log"))
	if err != nil {
		return fmt.Errorf("clickhouse console log: %w", err)
	}
	cmd.Stdout = console
	cmd.Stderr = console
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group keeps a terminal's Ctrl-C from reaching the
		// server before the tests can stop it in order.
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL,
	}

	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer console.Close()
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("run %s: %w", binary.path, err)
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return <-started
}

// waitReady polls the native port with SELECT 1 until the server answers,
// exits, or timeout passes.
func (p *clickhouseProcess) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("%w: %v", errClickHouseExited, p.waitErr)
		default:
		}
		if lastErr = p.selectOne(); lastErr == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("clickhouse-server on %s not ready after %v: %w", p.nativeAddr, timeout, lastErr)
}

func (p *clickhouseProcess) selectOne() error {
	conn, err := openClickHouse(p.nativeAddr, "default")
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var one uint8
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("SELECT 1: %w", err)
	}
	if one != 1 {
		return fmt.Errorf("SELECT 1 returned %d", one)
	}
	return nil
}

// stop ends the server with SIGTERM, then SIGKILL after
// clickhouseStopTimeout, and removes its directory.
func (p *clickhouseProcess) stop() error {
	var errs []error
	if err := syscall.Kill(p.pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		errs = append(errs, fmt.Errorf("stop clickhouse-server %d: %w", p.pid, err))
	}
	select {
	case <-p.exited:
	case <-time.After(clickhouseStopTimeout):
		if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill clickhouse-server %d: %w", p.pid, err))
		}
		<-p.exited
	}
	if err := os.RemoveAll(p.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove clickhouse dir: %w", err))
	}
	return errors.Join(errs...)
}

// execHTTP runs one statement with database as the default database.
func (p *clickhouseProcess) execHTTP(database, query string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	target := "http://" + p.httpAddr + "/?" + url.Values{"database": {database}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(query))
	if err != nil {
		return fmt.Errorf("build HTTP request: %w", err)
	}
	// No keep-alive: an idle HTTP connection holds up the server's shutdown
	// for seconds.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("HTTP %s: %w", p.httpAddr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("read HTTP answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	return nil
}

// logTail returns the last n lines of the server log, preceded by anything
// the server printed before its logger was set up.
func (p *clickhouseProcess) logTail(n int) string {
	var out strings.Builder
	for _, name := range []string{"console.log", "server.log"} {
		data, err := os.ReadFile(filepath.Join(p.dir, name))
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&out, "==> %s <==\n%s\n", name, strings.Join(lines, "\n"))
	}
	return out.String()
}

// clickhouseConfig is the whole server configuration. Ports that are not
// listed (interserver HTTP, MySQL, PostgreSQL, gRPC, TLS) are not opened.
// The root element is <yandex>, which 18.16 requires and current releases
// still accept. Caches are small because tests hold little data.
var clickhouseConfig = template.Must(template.New("config.xml").Parse(`<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{{.Dir}}/server.log</log>
        <errorlog>{{.Dir}}/server.err.log</errorlog>
        <size>100M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>{{.NativePort}}</tcp_port>
    <http_port>{{.HTTPPort}}</http_port>
    <path>{{.Dir}}/data/</path>
    <tmp_path>{{.Dir}}/data/tmp/</tmp_path>
    <user_files_path>{{.Dir}}/data/user_files/</user_files_path>
    <format_schema_path>{{.Dir}}/data/format_schemas/</format_schema_path>
    <users_config>{{.Dir}}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <max_concurrent_queries>100</max_concurrent_queries>
    <!-- Short, because the server waits for idle HTTP keep-alive
         connections when it shuts down. -->
    <keep_alive_timeout>1</keep_alive_timeout>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <mlock_executable>false</mlock_executable>
</yandex>
`))

// clickhouseUsers allows the password-less default user from loopback only.
const clickhouseUsers = `<?xml version="1.0"?>
<yandex>
    <profiles>
        <default></default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default></default>
    </quotas>
</yandex>
`

func writeClickHouseConfig(dir string, nativePort, httpPort int) error {
	var config bytes.Buffer
	err := clickhouseConfig.Execute(&config, struct {
		Dir                  string
		NativePort, HTTPPort int
	}{Dir: dir, NativePort: nativePort, HTTPPort: httpPort})
	if err != nil {
		return fmt.Errorf("render clickhouse config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), config.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write clickhouse config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users.xml"), []byte(clickhouseUsers), 0o644); err != nil {
		return fmt.Errorf("write clickhouse users: %w", err)
	}
	return nil
}

// sharedClickHouse holds the one server per test binary behind
// SharedClickHouse. It is package state on purpose: the server lives as long
// as the test binary, and only Main sees the binary end.
var sharedClickHouse struct {
	mu sync.Mutex
	// mainRuns is set by Main; SharedClickHouse refuses to start a server
	// nobody would stop.
	mainRuns bool
	process  *clickhouseProcess
	// launchErr is kept so that after one failed start the other tests fail
	// fast with the same reason instead of each waiting for a timeout.
	launchErr error
}

// SharedClickHouse returns the test binary's shared ClickHouse server,
// starting it on first use, with a fresh database "t_<random>" that belongs
// to this test and is dropped when it ends. Conn and Exec use that database;
// name it in DDL only when a query needs a qualified name.
//
// The server is stopped by Main, so the package must have
//
//	func TestMain(m *testing.M) { testkit.Main(m) }
//
// and SharedClickHouse fails the test when it does not.
func SharedClickHouse(t testing.TB) *ClickHouseServer {
	t.Helper()
	binary := requireClickHouse(t)

	sharedClickHouse.mu.Lock()
	if !sharedClickHouse.mainRuns {
		sharedClickHouse.mu.Unlock()
		t.Fatalf("testkit.SharedClickHouse needs func TestMain(m *testing.M) { testkit.Main(m) } " +
			"in this test package, so that the shared server stops when the tests end")
	}
	if sharedClickHouse.process == nil && sharedClickHouse.launchErr == nil {
		sharedClickHouse.process, sharedClickHouse.launchErr = launchClickHouse(binary)
	}
	process, launchErr := sharedClickHouse.process, sharedClickHouse.launchErr
	sharedClickHouse.mu.Unlock()
	if launchErr != nil {
		t.Fatalf("testkit: shared ClickHouse: %v", launchErr)
	}

	database, err := randomDatabaseName()
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	if err := process.execHTTP("default", "CREATE DATABASE "+database); err != nil {
		t.Fatalf("testkit: create test database: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("shared ClickHouse log tail:\n%s", process.logTail(clickhouseLogTailLines))
		}
		if err := process.execHTTP("default", "DROP DATABASE IF EXISTS "+database); err != nil {
			t.Errorf("testkit: drop test database %s: %v", database, err)
		}
	})
	return &ClickHouseServer{process: process, database: database}
}

// randomDatabaseName returns "t_" and 16 random hex digits.
func randomDatabaseName() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random database name: %w", err)
	}
	return "t_" + hex.EncodeToString(b[:]), nil
}

// Main runs the package's tests and then stops the shared services
// (SharedClickHouse), and exits with the tests' status. Call it from
// TestMain:
//
//	func TestMain(m *testing.M) { testkit.Main(m) }
func Main(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	sharedClickHouse.mu.Lock()
	sharedClickHouse.mainRuns = true
	sharedClickHouse.mu.Unlock()

	code := m.Run()

	sharedClickHouse.mu.Lock()
	defer sharedClickHouse.mu.Unlock()
	sharedClickHouse.mainRuns = false
	if sharedClickHouse.process != nil {
		if err := sharedClickHouse.process.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "testkit: shared ClickHouse: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
		sharedClickHouse.process = nil
	}
	return code
}
