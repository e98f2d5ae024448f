package hostmetrics

import (
	"testing"
)

// procParsers are the file parsers a fuzz input is fed to, by its first
// byte.
var procParsers = []func(b []byte){
	func(b []byte) { ParseStat(b) },
	func(b []byte) { ParseLoadAvg(b) },
	func(b []byte) { ParseMemInfo(b) },
	func(b []byte) { ParseDiskStats(b) },
	func(b []byte) { ParseNetDev(b) },
	func(b []byte) {
		var counts [len(TCPStateNames)]uint64
		CountTCPStates(b, &counts)
	},
	func(b []byte) { ParseFileNr(b) },
	func(b []byte) { ParseUptime(b) },
	func(b []byte) {
		for _, m := range mustMounts(b) {
			_ = m.Point
		}
	},
	func(b []byte) { ParseNodevFilesystems(b) },
	func(b []byte) { ParseSNMP(b) },
	func(b []byte) { ParseSockstat(b) },
}

func mustMounts(b []byte) []Mount {
	ms, _ := ParseMounts(b)
	return ms
}

// FuzzProcFiles feeds arbitrary bytes to every /proc file parser: none may
// panic or loop. The seed corpus in testdata/fuzz/FuzzProcFiles holds the
// captured files of three kernels.
func FuzzProcFiles(f *testing.F) {
	f.Add(uint8(0), []byte("cpu  1 2 3 4\ncpu0 1 2 3 4\nctxt 5\n"))
	f.Add(uint8(8), []byte(`/dev/sda1 /mnt/a\040b ext4 rw 0 0`+"\n"))
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		procParsers[int(which)%len(procParsers)](data)
	})
}
