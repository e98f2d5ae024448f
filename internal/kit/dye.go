package kit

import (
	"net/http"

	"github.com/opskit/opskit/internal/dye"
)

// newDyeTracer gives every daemon its dye rules and trace buffer (see
// internal/dye), named by its kind and listen address.
func newDyeTracer(d *Daemon) *dye.Tracer {
	t := dye.New(dye.Options{Daemon: d.Name, Instance: d.addr.String(), Log: d.Log})
	d.Metrics.NewGauge("opskit_dye_rules", func() float64 { return float64(len(t.Rules())) })
	d.Metrics.NewGauge("opskit_dye_records_unlogged_total", func() float64 { return float64(t.Unlogged()) })
	return t
}

// registerDye serves /admin/dye and /admin/trace behind the admin token.
func (d *Daemon) registerDye(mux *http.ServeMux) {
	d.Dye.Register(mux, d.requireToken)
}
