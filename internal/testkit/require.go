package testkit

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// InCI reports whether the environment variable CI says we run in continuous
// integration ("true" or "1"). In CI a missing test service is a failure; on a
// developer machine it is a skip.
func InCI() bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv("CI"))) {
	case "true", "1":
		return true
	}
	return false
}

// RequireBinary returns the path of the program name, looked up in PATH and
// then in /usr/sbin and /usr/bin. When it is missing the test fails in CI and
// is skipped elsewhere; both messages say which apt package provides it.
func RequireBinary(t testing.TB, name, aptPackage string) string {
	t.Helper()
	if path, err := findBinary(name, debianBinaryDirs()); err == nil {
		return path
	}
	missing(t, name+" not found: apt-get install "+aptPackage+" (make test installs it)")
	return ""
}

// missing reports an absent test dependency: a failure in CI, a skip elsewhere.
func missing(t testing.TB, message string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s", message)
	}
	t.Skipf("%s", message)
}

// debianBinaryDirs are searched after PATH: Debian installs daemons such as
// clickhouse-server and rrdcached under /usr/sbin, which a non-root PATH
// often lacks.
func debianBinaryDirs() []string { return []string{"/usr/sbin", "/usr/bin"} }

// findBinary looks name up in PATH, then in fallbackDirs.
func findBinary(name string, fallbackDirs []string) (string, error) {
	path, err := exec.LookPath(name)
	if err == nil {
		return path, nil
	}
	if strings.ContainsRune(name, filepath.Separator) {
		return "", err
	}
	for _, dir := range fallbackDirs {
		candidate := filepath.Join(dir, name)
		if info, statErr := os.Stat(candidate); statErr == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
			return candidate, nil
		}
	}
	return "", errors.Join(err, os.ErrNotExist)
}

// FreeAddr returns "127.0.0.1:PORT" with a TCP port that is free right now.
// Another process may take it before the caller binds it, so prefer
// listening on port 0 where the code under test allows it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// FreePort returns a loopback TCP port that is free right now; see FreeAddr.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freeLoopbackPort()
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	return port
}

// freeLoopbackPort returns a TCP port on 127.0.0.1 that is free right now.
func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
