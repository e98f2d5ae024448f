package adaptive_test

import (
	"context"
	"fmt"

	"github.com/opskit/opskit/ratelimit/adaptive"
)

// A limiter in front of a call: over the limit the call is not made.
func ExampleLimiter() {
	lim, _ := adaptive.New(adaptive.Config{Algorithm: "auto", InitialLimit: 1, MinLimit: 1})
	tok, err := lim.Acquire(context.Background())
	fmt.Println("first:", err)
	_, err = lim.Acquire(context.Background())
	fmt.Println("second while the first is in flight:", err)
	tok.Done(false) // the call succeeded
	// Output:
	// first: <nil>
	// second while the first is in flight: over the concurrency limit
}
