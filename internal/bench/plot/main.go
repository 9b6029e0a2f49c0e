// Command plot draws the charts of docs/BENCHMARKS.md from the files that
// "quicpush bench ... --out FILE" writes: publish -> deliver latency (p50,
// p99) against subscribers, and fan-out deliveries/s against subscribers,
// quicpush beside the raw quic-go baseline.
//
//	go run ./internal/bench/plot -dir docs/bench docs/bench/*.json
//
// It writes DIR/latency.png and DIR/fanout.png for the scenarios the files
// hold at two subscriber counts or more, from the least disturbed run of
// each setup (bench.Quietest), and prints the table of those runs, judged
// by the current targets.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/quicpush/quicpush/internal/bench"
)

func main() {
	dir := flag.String("dir", "docs/bench", "where to write the PNGs")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: plot [-dir DIR] RESULTS.json... (written by quicpush bench --out)")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Args(), *dir); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

// series is one line of a chart: a figure of one side against subscribers.
type series struct {
	name  string
	raw   bool // the baseline's figures, not quicpush's
	dash  bool
	value func(*bench.Figures) float64
}

var (
	quicpushColor = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	rawColor      = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
)

func run(files []string, dir string) error {
	var results []bench.Result
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		var doc struct {
			Results []bench.Result `json:"results"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		results = append(results, doc.Results...)
	}
	results = bench.Quietest(results)
	for i := range results {
		results[i].Assess()
	}
	if err := bench.WriteTable(os.Stdout, results); err != nil {
		return err
	}
	p50 := func(f *bench.Figures) float64 { return f.Latency.P50 }
	p99 := func(f *bench.Figures) float64 { return f.Latency.P99 }
	rate := func(f *bench.Figures) float64 { return f.DeliveriesPerSec }
	charts := []struct {
		scenario, file, title, y string
		logY                     bool
		target                   float64 // a horizontal line, if not zero
		series                   []series
	}{
		{bench.Latency, "latency.png", "publish -> deliver latency", "ms (log scale)", true, 50, []series{
			{"quicpush p50", false, false, p50}, {"quicpush p99", false, true, p99},
			{"raw quic-go p50", true, false, p50}, {"raw quic-go p99", true, true, p99},
		}},
		{bench.Fanout, "fanout.png", "fan-out throughput", "deliveries/s", false, 0, []series{
			{"quicpush", false, false, rate}, {"raw quic-go", true, false, rate},
		}},
	}
	for _, c := range charts {
		var rs []bench.Result
		for _, r := range results {
			if r.Scenario == c.scenario && r.Raw != nil {
				rs = append(rs, r)
			}
		}
		if len(rs) < 2 {
			continue
		}
		slices.SortFunc(rs, func(a, b bench.Result) int { return a.Subscribers - b.Subscribers })
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s, %s", c.title, setup(rs[0]))
		p.X.Label.Text = "subscribers"
		p.Y.Label.Text = c.y
		p.Legend.Top, p.Legend.Left = c.logY, true
		p.Add(plotter.NewGrid())
		var ticks []plot.Tick
		for _, r := range rs {
			ticks = append(ticks, plot.Tick{Value: float64(r.Subscribers), Label: fmt.Sprint(r.Subscribers)})
		}
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		if c.logY {
			p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
		} else {
			p.Y.Min, p.Y.Tick.Marker = 0, thousands{}
		}
		for _, s := range c.series {
			pts := make(plotter.XYs, len(rs))
			for i := range rs {
				f := &rs[i].Quicpush
				if s.raw {
					f = rs[i].Raw
				}
				pts[i] = plotter.XY{X: float64(rs[i].Subscribers), Y: s.value(f)}
			}
			line, points, err := plotter.NewLinePoints(pts)
			if err != nil {
				return err
			}
			line.Color, points.Color = quicpushColor, quicpushColor
			if s.raw {
				line.Color, points.Color = rawColor, rawColor
			}
			line.Width = vg.Points(1.5)
			if s.dash {
				line.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
				points.Shape = draw.TriangleGlyph{}
			}
			p.Add(line, points)
			p.Legend.Add(s.name, line, points)
		}
		if c.target > 0 {
			t := plotter.NewFunction(func(float64) float64 { return c.target })
			t.Color, t.Dashes = color.Gray{Y: 0x80}, []vg.Length{vg.Points(2), vg.Points(2)}
			p.Add(t)
			p.Legend.Add(fmt.Sprintf("target p99 %g ms", c.target), t)
		}
		path := filepath.Join(dir, c.file)
		if err := p.Save(8*vg.Inch, 5*vg.Inch, path); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "wrote", path)
	}
	return nil
}

// thousands labels every tick of an axis, in thousands ("150k").
type thousands struct{}

func (thousands) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i, t := range ticks {
		ticks[i].Label = fmt.Sprintf("%gk", t.Value/1000)
	}
	return ticks
}

// setup describes the load of a series of results.
func setup(r bench.Result) string {
	if r.Rate > 0 {
		return fmt.Sprintf("%g msg/s of %d B", r.Rate, r.Size)
	}
	return fmt.Sprintf("%d messages in flight of %d B", r.Window, r.Size)
}
