// Package testkit provides the services opskit's tests and benchmarks run
// against, all on loopback and all cleaned up when the test ends.
//
// # Kafka
//
// Kafka starts an in-process fake cluster (franz-go's kfake) that speaks the
// real Kafka protocol, with as many brokers and pre-created topics as the
// test asks for:
//
//	cluster := testkit.Kafka(t, testkit.KafkaBrokers(3), testkit.KafkaTopic("logs", 3))
//	client := cluster.Client(t)                        // franz-go, closed with the test
//	records := cluster.ReadTopic(t, "logs", 10, 5*time.Second)
//
// Topics that are not pre-created do not exist. For processes outside the
// test binary (benchmarks, make demo) the same cluster runs standalone:
//
//	go run ./internal/tools/kfake --listen 127.0.0.1:9092 --topics logs:3,metrics:1
//
// # ClickHouse
//
// ClickHouse runs Debian's clickhouse-server (18.16.1 on the test machines;
// current releases work too) with a configuration, users file and data
// directory of its own, on free loopback ports. Most tests should call
// SharedClickHouse instead, which starts one server per test binary and
// gives each test a fresh database that is dropped when the test ends. The
// shared server is stopped by Main, which the package's tests must call:
//
//	func TestMain(m *testing.M) { testkit.Main(m) }
//
//	func TestSink(t *testing.T) {
//		ch := testkit.SharedClickHouse(t)
//		ch.Exec(t, "CREATE TABLE logs (time DateTime, line String) ENGINE = MergeTree() ORDER BY time")
//		conn := ch.Conn(t) // clickhouse-go native connection, default database = the test's
//		...
//	}
//
// Servers are started with the parent-death signal set, so a test binary
// that panics or times out takes its servers with it; the directory it
// leaves behind is removed by the next test binary that starts a server.
// This relies on Linux, like the fleet opskit runs on.
//
// Against 18.16 use the native protocol for data, explicit column lists in
// INSERT, classic column types (String, Float64, UInt*/Int*, DateTime,
// Array, Nullable), PrepareBatch for inserts, and only int or bool query
// settings; see openClickHouse and ClickHouseServer.Exec for why.
//
// # Missing programs: fail in CI, skip elsewhere
//
// Services that need a program from Debian (clickhouse-server, kcat,
// rrdtool, promtool, ...) look it up with RequireBinary. When the program
// is missing and the environment variable CI is "true" or "1", the test
// fails with the apt-get command that installs it, so CI never passes by
// skipping; on a developer machine the test is skipped with the same hint.
// scripts/install-test-deps.sh installs them all.
package testkit
