// Package buildinfo holds the version stamped into every opskit binary.
//
// The Makefile sets Version and Commit with
//
//	-ldflags "-X github.com/opskit/opskit/internal/buildinfo.Version=... -X ...Commit=..."
//
// A plain `go build` leaves them at "dev" and "unknown".
package buildinfo

import (
	"fmt"
	"runtime"
)

// Set by the linker; see the package doc.
var (
	Version = "dev"
	Commit  = "unknown"
)

// String is the one line `--version` prints.
func String(binary string) string {
	return fmt.Sprintf("%s %s (commit %s, %s %s/%s)", binary, Version, Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
