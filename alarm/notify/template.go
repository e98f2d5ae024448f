package notify

import (
	"encoding/json"
	"strings"
	"text/template"
	"time"
)

// TemplateData is what a webhook template sees: the v4 payload fields, plus
// for each alert its duration (firing: so far; resolved: start to end).
type TemplateData struct {
	*Payload
	Firing   []TemplateAlert
	Resolved []TemplateAlert
	All      []TemplateAlert
}

// TemplateAlert is one alert in TemplateData.
type TemplateAlert struct {
	PayloadAlert
	Duration time.Duration
}

// NewTemplateData prepares p for a template.
func NewTemplateData(p *Payload, now time.Time) *TemplateData {
	d := &TemplateData{Payload: p}
	for _, a := range p.Alerts {
		ta := TemplateAlert{PayloadAlert: a}
		if a.Status == StatusResolved {
			ta.Duration = a.EndsAt.Sub(a.StartsAt)
			d.Resolved = append(d.Resolved, ta)
		} else {
			ta.Duration = now.Sub(a.StartsAt)
			d.Firing = append(d.Firing, ta)
		}
		d.All = append(d.All, ta)
	}
	return d
}

// templateFuncs are the helpers templates may call.
var templateFuncs = template.FuncMap{
	// json writes v as a JSON value (a quoted, escaped string for text), so
	// templates can build valid JSON bodies.
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"join":       strings.Join,
	"upper":      strings.ToUpper,
	"lower":      strings.ToLower,
	"since":      func(t time.Time) time.Duration { return time.Since(t).Round(time.Second) },
	"recoveries": recoveries,
	"round":      func(d time.Duration) time.Duration { return d.Round(time.Second) },
}

// recoveries describes resolved alerts, one per line, for recovery
// notices: "\nweb01 recovered after 1h29m0s (value 3.5)". The host is the
// endpoint or instance label; the value is the "value" annotation, if any.
func recoveries(alerts []TemplateAlert) string {
	var b strings.Builder
	for _, a := range alerts {
		host := a.Labels["endpoint"]
		if host == "" {
			host = a.Labels["instance"]
		}
		if host == "" {
			host = a.Labels["alertname"]
		}
		b.WriteString("\n")
		b.WriteString(host)
		b.WriteString(" recovered after ")
		b.WriteString(a.Duration.Round(time.Second).String())
		if v := a.Annotations["value"]; v != "" {
			b.WriteString(" (value ")
			b.WriteString(v)
			b.WriteString(")")
		}
	}
	return b.String()
}
