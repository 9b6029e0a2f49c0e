package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteTable writes results as a table for people: one row per figure,
// quicpush beside the raw baseline (quic-go alone; store: Badger alone),
// their ratio, and the targets if any.
func WriteTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tSETUP\tFIGURE\tQUICPUSH\tRAW\tQUICPUSH/RAW\tTARGET")
	for _, r := range results {
		for i, row := range r.rows() {
			scenario, setup := r.Scenario, r.setup()
			if i > 0 {
				scenario, setup = "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", scenario, setup, row.figure, row.quicpush, row.raw, row.ratio, row.target)
		}
	}
	return tw.Flush()
}

type row struct{ figure, quicpush, raw, ratio, target string }

func (r *Result) setup() string {
	switch r.Scenario {
	case Fanout, Latency:
		s := fmt.Sprintf("%d subs, ", r.Subscribers)
		if r.Rate > 0 {
			s += fmt.Sprintf("%g msg/s, ", r.Rate)
		} else {
			s += fmt.Sprintf("window %d, ", r.Window)
		}
		return s + fmt.Sprintf("%d B", r.Size)
	case Idle:
		return fmt.Sprintf("%d conns", r.Subscribers)
	case Store:
		return fmt.Sprintf("%d appenders x %d msgs, %d B", r.Publishers, r.Batch, r.Size)
	case Repair:
		return fmt.Sprintf("%d subs x %d msgs, %d B", r.Subscribers, r.Backlog, r.Size)
	}
	return ""
}

func (r *Result) rows() []row {
	raw := r.Raw
	if raw == nil {
		raw = &Figures{}
	}
	var rows []row
	// add appends a row for a figure; get picks it out of a Figures.
	add := func(figure string, get func(*Figures) float64, format, ratioKey string) {
		q, w := get(&r.Quicpush), get(raw)
		rw := row{figure: figure, quicpush: fmt.Sprintf(format, q)}
		if r.Raw != nil {
			rw.raw = fmt.Sprintf(format, w)
		}
		if v, ok := r.Ratio[ratioKey]; ok {
			rw.ratio = fmt.Sprintf("%.2fx", v)
		}
		if v, ok := r.Overhead[ratioKey]; ok {
			rw.ratio += fmt.Sprintf(" (%+.1f)", v)
		}
		rows = append(rows, rw)
	}
	lat := func(p func(*Percentiles) float64) func(*Figures) float64 {
		return func(f *Figures) float64 {
			if f.Latency == nil {
				return 0
			}
			return p(f.Latency)
		}
	}
	switch r.Scenario {
	case Fanout, Latency:
		add("deliveries/s", func(f *Figures) float64 { return f.DeliveriesPerSec }, "%.0f", "deliveries_per_s")
		add("server CPU µs/delivery", func(f *Figures) float64 { return f.CPUPerDeliveryUs }, "%.1f", "server_cpu_us_per_delivery")
		add("UDP datagrams/delivery", func(f *Figures) float64 { return f.DatagramsPerDelivery }, "%.2f", "")
		add("server CPU cores", func(f *Figures) float64 { return f.CPUCores }, "%.2f", "")
		add("load clients CPU cores", func(f *Figures) float64 { return f.LoadCPUCores }, "%.2f", "")
		add("other processes cores", func(f *Figures) float64 { return f.OtherCPUCores }, "%.2f", "")
		add("latency p50 ms", lat(func(p *Percentiles) float64 { return p.P50 }), "%.1f", "latency_p50")
		add("latency p90 ms", lat(func(p *Percentiles) float64 { return p.P90 }), "%.1f", "")
		add("latency p99 ms", lat(func(p *Percentiles) float64 { return p.P99 }), "%.1f", "latency_p99")
		add("latency max ms", lat(func(p *Percentiles) float64 { return p.Max }), "%.1f", "")
		add("lost deliveries", func(f *Figures) float64 { return float64(f.Lost) }, "%.0f", "")
	case Idle:
		add("server RSS KiB/conn", func(f *Figures) float64 { return f.RSSPerConnKiB }, "%.1f", "rss_per_conn_kib")
		add("... after GC + release", func(f *Figures) float64 { return f.RSSReleasedPerConnKiB }, "%.1f", "rss_released_per_conn_kib")
		add("server heap KiB/conn", func(f *Figures) float64 { return f.HeapPerConnKiB }, "%.1f", "heap_per_conn_kib")
		add("... heap spans in use", func(f *Figures) float64 { return f.HeapSpansPerConnKiB }, "%.1f", "heap_spans_per_conn_kib")
		add("server stacks KiB/conn", func(f *Figures) float64 { return f.StackPerConnKiB }, "%.1f", "stack_per_conn_kib")
		add("server goroutines/conn", func(f *Figures) float64 { return f.GoroutinesPerConn }, "%.2f", "goroutines_per_conn")
		add("server CPU ms/connect", func(f *Figures) float64 { return f.CPUPerConnectMs }, "%.2f", "server_cpu_ms_per_connect")
	case Store:
		add("durable appends/s", func(f *Figures) float64 { return f.AppendPerSec }, "%.0f", "append_per_s")
		add("CPU µs/append", func(f *Figures) float64 { return f.CPUPerAppendUs }, "%.1f", "cpu_us_per_append")
		add("CPU cores appending", func(f *Figures) float64 { return f.CPUCores }, "%.2f", "")
		add("other processes cores", func(f *Figures) float64 { return f.OtherCPUCores }, "%.2f", "")
		add("range reads msgs/s", func(f *Figures) float64 { return f.RangePerSec }, "%.0f", "")
		rows[len(rows)-1].raw = "" // the raw baseline is not read
	case Repair:
		add("caught up after s", func(f *Figures) float64 { return f.CaughtUpSeconds }, "%.2f", "")
		add("repaired msgs/s", func(f *Figures) float64 { return f.RepairPerSec }, "%.0f", "")
		add("server CPU µs/msg", func(f *Figures) float64 { return f.CPUPerRepairedUs }, "%.2f", "")
		add("server CPU cores", func(f *Figures) float64 { return f.CPUCores }, "%.2f", "")
		add("load clients CPU cores", func(f *Figures) float64 { return f.LoadCPUCores }, "%.2f", "")
		add("other processes cores", func(f *Figures) float64 { return f.OtherCPUCores }, "%.2f", "")
	}
	for _, t := range r.Targets {
		verdict := "met"
		if !t.Met {
			verdict = "MISSED"
		}
		target := fmt.Sprintf("%s: %s", t.Want, verdict)
		// The target goes on the row of the figure it is about.
		for i := range rows {
			if targetFigure(r.Scenario) == rows[i].figure {
				if rows[i].target != "" {
					rows[i].target += "; "
				}
				rows[i].target += target
			}
		}
	}
	return rows
}

// targetFigure is the row a scenario's target is about.
func targetFigure(scenario string) string {
	return map[string]string{
		Fanout: "deliveries/s", Latency: "latency p99 ms", Idle: "server RSS KiB/conn",
		Store: "durable appends/s", Repair: "repaired msgs/s",
	}[scenario]
}
