package plugin

import (
	"testing"

	"github.com/opskit/opskit/transfer/intake"
)

// FuzzParse: any plugin output parses without panic into valid points and
// rejections.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`[{"metric":"mysql.qps","value":10},{"metric":"x","value":"y"}]`))
	f.Add([]byte("{\"metric\":\"a\",\"value\":1}\nredis.mem 100 1700000000\n\n{broken\nonly-two x\n"))
	f.Add([]byte("Segmentation fault\n"))
	lim := intake.DefaultLimits()
	f.Fuzz(func(t *testing.T, out []byte) {
		pts, _ := Parse(out, 1700000000, defaults, lim)
		for _, p := range pts {
			if rej := lim.Validate(&p); rej != nil {
				t.Fatalf("point %+v fails validation: %v", p, rej)
			}
		}
	})
}
