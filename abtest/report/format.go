package report

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"text/tabwriter"

	"github.com/opskit/opskit/abtest/stats"
)

// WriteJSON writes the report as one JSON document.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func num(f stats.JSONFloat) string { return fnum(float64(f)) }

func fnum(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "-"
	}
	return fmt.Sprintf("%.4g", f)
}

func pct(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "-"
	}
	return fmt.Sprintf("%+.2f%%", 100*f)
}

// WriteTable writes the report as an aligned text table with warnings.
func WriteTable(w io.Writer, r *Report) error {
	fmt.Fprintf(w, "experiment %s", r.Experiment)
	if r.Metric != "" {
		fmt.Fprintf(w, "  metric %s (%s)", r.Metric, r.Kind)
	}
	fmt.Fprintf(w, "  %d events  %.0f%% intervals\n", r.Events, 100*r.Level)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "variant\tunits\toutliers\tvalue\tvalue CI\tdiff\tdiff CI\trelative\trelative CI\tp-value\t")
	for _, v := range r.Variants {
		row := []string{v.Name, fmt.Sprint(v.Units), fmt.Sprint(v.Outliers), num(v.Value),
			"[" + num(v.ValueCI[0]) + ", " + num(v.ValueCI[1]) + "]"}
		if c := v.Comparison; c != nil {
			row = append(row, fnum(c.Diff), "["+fnum(c.DiffCI[0])+", "+fnum(c.DiffCI[1])+"]",
				pct(c.Relative), "["+pct(c.RelCI[0])+", "+pct(c.RelCI[1])+"]", fnum(c.PValue))
		} else {
			row = append(row, "(control)", "", "", "", "")
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "sample ratio: chi-square %s, p %s", num(r.SRM.ChiSquare), num(r.SRM.PValue))
	if r.SRM.Mismatch {
		fmt.Fprint(w, "  MISMATCH")
	}
	fmt.Fprintln(w)
	if r.Fences != nil {
		fmt.Fprintf(w, "outlier fences: [%s, %s] (Q1 %s, Q3 %s)\n", fnum(r.Fences.Lower), fnum(r.Fences.Upper), fnum(r.Fences.Q1), fnum(r.Fences.Q3))
	}
	if r.CUPEDTheta != nil {
		fmt.Fprintf(w, "CUPED theta: %s\n", fnum(*r.CUPEDTheta))
	}
	e := r.Excluded
	fmt.Fprintf(w, "excluded units: %d whitelisted, %d in several variants, %d unknown variant, %d never exposed\n",
		e.Forced, e.MixedVariants, e.UnknownVariant, e.Unexposed)
	for _, warning := range r.Warnings {
		fmt.Fprintf(w, "WARNING: %s\n", warning)
	}
	return nil
}

// WriteHTML writes a self-contained page: the table and a chart of each
// variant's estimate with its interval, drawn as SVG by the page's script
// from the embedded JSON report.
func WriteHTML(w io.Writer, r *Report) error {
	var table strings.Builder
	if err := WriteTable(&table, r); err != nil {
		return err
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return htmlPage.Execute(w, map[string]any{
		"R":     r,
		"Table": table.String(),
		"JSON":  template.JS(data),
	})
}

var htmlPage = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>abtest report: {{.R.Experiment}}</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
.warning { color: #b00; font-weight: bold; }
svg text { font-size: 12px; }
</style></head>
<body>
<h1>Experiment {{.R.Experiment}}</h1>
{{range .R.Warnings}}<p class="warning">{{.}}</p>{{end}}
<h2>{{if .R.Metric}}{{.R.Metric}} ({{.R.Kind}}){{else}}units{{end}} by variant</h2>
<div id="chart"></div>
<pre>{{.Table}}</pre>
<script>
const report = {{.JSON}};
(function draw() {
  const ns = "http://www.w3.org/2000/svg";
  const rows = report.variants.filter(v => v.value !== null);
  const width = 640, rowH = 36, left = 140, right = 30;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("id", "estimates");
  svg.setAttribute("width", width);
  svg.setAttribute("height", rowH * rows.length + 40);
  const lows = rows.map(v => v.value_ci[0] === null ? v.value : v.value_ci[0]);
  const highs = rows.map(v => v.value_ci[1] === null ? v.value : v.value_ci[1]);
  let lo = Math.min(...lows), hi = Math.max(...highs);
  if (!(hi > lo)) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.05; lo -= pad; hi += pad;
  const x = v => left + (v - lo) / (hi - lo) * (width - left - right);
  const el = (name, attrs, text) => {
    const e = document.createElementNS(ns, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  };
  rows.forEach((v, i) => {
    const y = 20 + i * rowH;
    el("text", {x: 4, y: y + 4, "class": "label"}, v.name);
    el("line", {x1: x(lows[i]), x2: x(highs[i]), y1: y, y2: y, stroke: "#36c", "stroke-width": 3, "class": "interval",
      "data-variant": v.name, "data-low": lows[i], "data-high": highs[i]});
    el("circle", {cx: x(v.value), cy: y, r: 5, fill: i === 0 ? "#555" : "#c33", "class": "estimate",
      "data-variant": v.name, "data-value": v.value});
  });
  el("text", {x: left, y: rowH * rows.length + 30}, lo.toPrecision(4));
  el("text", {x: width - right - 40, y: rowH * rows.length + 30}, hi.toPrecision(4));
  document.getElementById("chart").appendChild(svg);
})();
</script>
</body></html>
`))
