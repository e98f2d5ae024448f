package nginx_test

import (
	"fmt"

	"github.com/opskit/opskit/ratelimit/nginx"
)

// The documentation's example: rate 10r/s, burst 5, seven requests in the
// same millisecond from one client.
func ExampleSet_Decide() {
	now := uint64(100_000)
	clock := func() uint64 { return now }
	zone, _ := nginx.NewZone(nginx.ZoneConfig{Name: "perip", Rate: nginx.MustParseRate("10r/s"), MaxKeys: 10000}, clock)
	set, _ := nginx.NewSet([]nginx.Limit{{Zone: zone, Burst: 5}}, false)
	for i := 0; i < 7; i++ {
		d := set.Decide([]string{"192.0.2.1"})
		fmt.Println(d.Status, d.Delay)
	}
	// Output:
	// PASSED 0s
	// DELAYED 100ms
	// DELAYED 200ms
	// DELAYED 300ms
	// DELAYED 400ms
	// DELAYED 500ms
	// REJECTED 0s
}
