package main

import (
	"errors"
	"flag"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The plot workload draws PNGs from the raw results a writes run saved
// (its .json next to the markdown); the writes workload draws the same
// ones itself right after saving them.
var plotIn, plotOut string

func init() {
	registerWorkload("plot", runPlot, func(fs *flag.FlagSet) {
		fs.StringVar(&plotIn, "plot-in", "", "-workload plot: the raw results of a writes run (the .json next to its report)")
		fs.StringVar(&plotOut, "plot-out", "", "-workload plot: directory for the PNGs (default: -plot-in's directory)")
	})
}

func runPlot(config) error {
	if plotIn == "" {
		return errors.New("-workload plot needs -plot-in FILE.json (written by the writes workload next to its report)")
	}
	j, rs, err := readResults(plotIn)
	if err != nil {
		return err
	}
	dir := plotOut
	if dir == "" {
		dir = filepath.Dir(plotIn)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files, err := renderPlots(j, rs, dir, strings.TrimSuffix(filepath.Base(plotIn), ".json"))
	for _, f := range files {
		fmt.Println(f)
	}
	return err
}

const (
	plotDPI = 144
	// panelW and panelH are the size of one chart; a PNG with several
	// sizes has one panel per size, two panels a row.
	panelW = 7.5 * vg.Inch
	panelH = 4.8 * vg.Inch
)

// systemColors tell the systems apart also to colour-blind readers; a
// system keeps its colour (by its place in the run's -systems) on every
// chart.
var systemColors = []color.Color{
	color.RGBA{0, 114, 178, 255},   // blue
	color.RGBA{213, 94, 0, 255},    // vermilion
	color.RGBA{0, 158, 115, 255},   // green
	color.RGBA{204, 121, 167, 255}, // purple
	color.RGBA{230, 159, 0, 255},   // orange
	color.RGBA{86, 180, 233, 255},  // sky blue
	color.RGBA{0, 0, 0, 255},
}

// systemGlyphs are the markers of the systems' points.
var systemGlyphs = []draw.GlyphDrawer{
	draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}, draw.PyramidGlyph{}, draw.CrossGlyph{}, draw.PlusGlyph{}, draw.RingGlyph{},
}

// plotPanel is one chart and its legend, drawn in a strip below it (so that it
// never hides a line).
type plotPanel struct {
	p       *plot.Plot
	legend  plot.Legend
	entries int
}

// renderPlots draws, into dir, <base>-throughput.png and a
// <base>-latency-cdf-<clients>c.png for each number of clients in rs, each
// with a panel per command size. It returns the files it wrote.
func renderPlots(j resultsJSON, rs []*result, dir, base string) ([]string, error) {
	if len(rs) == 0 {
		return nil, errors.New("no runs to plot")
	}
	systems, clients, sizes := plotAxes(j, rs)
	subtitle := "3 nodes, fsync on"
	if !j.Start.IsZero() {
		subtitle += ", " + j.Start.Format("2006-01-02 15:04 MST")
	}
	var files []string
	var errs []error
	save := func(name string, panels []*plotPanel) {
		if err := savePanels(name, panels); err != nil {
			errs = append(errs, err)
		} else {
			files = append(files, name)
		}
	}

	var panels []*plotPanel
	for _, size := range sizes {
		panels = append(panels, throughputPlot(rs, systems, clients, size, subtitle))
	}
	shareAxis(panels, func(p *plot.Plot) *plot.Axis { return &p.Y })
	save(filepath.Join(dir, base+"-throughput.png"), panels)

	for _, c := range clients {
		panels = nil
		for _, size := range sizes {
			panels = append(panels, latencyCDFPlot(rs, systems, c, size, subtitle))
		}
		shareAxis(panels, func(p *plot.Plot) *plot.Axis { return &p.X })
		save(filepath.Join(dir, fmt.Sprintf("%s-latency-cdf-%dc.png", base, c)), panels)
	}
	return files, errors.Join(errs...)
}

// shareAxis gives the panels' axis the same range, so that the sizes compare
// at a glance.
func shareAxis(panels []*plotPanel, axis func(*plot.Plot) *plot.Axis) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, pn := range panels {
		a := axis(pn.p)
		lo, hi = min(lo, a.Min), max(hi, a.Max)
	}
	for _, pn := range panels {
		a := axis(pn.p)
		a.Min, a.Max = lo, hi
	}
}

// plotAxes returns the systems (in -systems order, then any others in
// the order they appear), clients and sizes (increasing) of rs.
func plotAxes(j resultsJSON, rs []*result) (systems []string, clients, sizes []int) {
	for _, s := range j.Systems {
		if slices.ContainsFunc(rs, func(r *result) bool { return r.system == s }) && !slices.Contains(systems, s) {
			systems = append(systems, s)
		}
	}
	for _, r := range rs {
		if !slices.Contains(systems, r.system) {
			systems = append(systems, r.system)
		}
		if !slices.Contains(clients, r.clients) {
			clients = append(clients, r.clients)
		}
		if !slices.Contains(sizes, r.size) {
			sizes = append(sizes, r.size)
		}
	}
	slices.Sort(clients)
	slices.Sort(sizes)
	return systems, clients, sizes
}

func plotRuns(rs []*result, sys string, clients, size int) []*result {
	var out []*result
	for _, r := range rs {
		if r.system == sys && r.clients == clients && r.size == size {
			out = append(out, r)
		}
	}
	return out
}

// newPlotPanel is a chart with the harness's fonts and grid.
func newPlotPanel(title string) *plotPanel {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(12)
	p.Title.Padding = vg.Points(10)
	p.X.Label.TextStyle.Font.Size = vg.Points(11)
	p.Y.Label.TextStyle.Font.Size = vg.Points(11)
	p.X.Tick.Label.Font.Size = vg.Points(10)
	p.Y.Tick.Label.Font.Size = vg.Points(10)
	g := plotter.NewGrid()
	g.Vertical.Color = color.Gray{Y: 220}
	g.Horizontal.Color = color.Gray{Y: 220}
	p.Add(g)
	l := plot.NewLegend()
	l.TextStyle.Font.Size = vg.Points(10.5)
	l.ThumbnailWidth = vg.Points(30)
	l.Padding = vg.Points(4)
	l.Top, l.Left = true, true
	return &plotPanel{p: p, legend: l}
}

func (pn *plotPanel) add(name string, thumbs ...plot.Thumbnailer) {
	pn.legend.Add(name, thumbs...)
	pn.entries++
}

// throughputPlot is ops/s against clients at one size: a line through
// each system's medians, with a bar from its slowest to its fastest run.
// Both axes are logarithmic (the harness takes the logarithms, gonum's log
// scale pads the chart badly), so that 1 client and 256 show alike and
// equal gaps between the lines are equal ratios. The systems are shifted
// a little sideways so that their bars do not hide each other.
func throughputPlot(rs []*result, systems []string, clients []int, size int, subtitle string) *plotPanel {
	runs := 0
	for _, sys := range systems {
		for _, c := range clients {
			runs = max(runs, len(plotRuns(rs, sys, c, size)))
		}
	}
	pn := newPlotPanel(fmt.Sprintf("Write throughput, %d B commands\nmedian of %d runs, bars min to max; %s", size, runs, subtitle))
	p := pn.p
	p.X.Label.Text = "closed-loop clients (log scale)"
	p.Y.Label.Text = "throughput (applies/s, log scale)"
	var ticks plot.ConstantTicks
	for _, c := range clients {
		ticks = append(ticks, plot.Tick{Value: math.Log2(float64(c)), Label: strconv.Itoa(c)})
	}
	p.X.Tick.Marker = ticks
	p.Y.Tick.Marker = log10Ticks{format: fmtOpsTick}

	xlo, xhi := math.Log2(float64(clients[0]))-0.5, math.Log2(float64(clients[len(clients)-1]))+0.5
	step := 0.02 * (xhi - xlo) // sideways shift between neighbouring systems
	ylo, yhi := math.Inf(1), math.Inf(-1)
	for i, sys := range systems {
		shift := step * (float64(i) - float64(len(systems)-1)/2)
		var pts plotter.XYs
		var bars plotter.YErrors
		for _, c := range clients {
			var ops []float64
			for _, r := range plotRuns(rs, sys, c, size) {
				ops = append(ops, r.opsPerSec())
			}
			s := spreadOf(ops)
			if len(ops) == 0 || s.med <= 0 {
				continue // nothing to show on a log scale
			}
			// A run without a single apply has no place on a log scale:
			// its bar ends at a tenth of the median.
			lo := s.lo
			if lo <= 0 {
				lo = s.med / 10
			}
			y := math.Log10(s.med)
			pts = append(pts, plotter.XY{X: math.Log2(float64(c)) + shift, Y: y})
			bars = append(bars, struct{ Low, High float64 }{y - math.Log10(lo), math.Log10(s.hi) - y})
			ylo, yhi = min(ylo, math.Log10(lo)), max(yhi, math.Log10(s.hi))
		}
		if len(pts) == 0 {
			continue
		}
		col := systemColors[i%len(systemColors)]
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			continue // a NaN or infinity: cannot happen with the guards above
		}
		line.Color, line.Width = col, vg.Points(1.6)
		points.Color, points.Shape, points.Radius = col, systemGlyphs[i%len(systemGlyphs)], vg.Points(3.2)
		if eb, err := plotter.NewYErrorBars(plotErrorPoints{pts, bars}); err == nil {
			eb.Color, eb.Width, eb.CapWidth = col, vg.Points(1.2), vg.Points(8)
			p.Add(eb)
		}
		p.Add(line, points)
		pn.add(sys, line, points)
	}
	if math.IsInf(ylo, 0) {
		p.Title.Text += "\n(no run completed an apply)"
		ylo, yhi = 0, 1
	}
	pad := max(0.06*(yhi-ylo), 0.05)
	p.X.Min, p.X.Max = xlo, xhi
	p.Y.Min, p.Y.Max = ylo-pad, yhi+pad
	return pn
}

// plotErrorPoints feeds plotter.NewYErrorBars.
type plotErrorPoints struct {
	plotter.XYs
	plotter.YErrors
}

// latencyCDFPlot is the share of applies that took at most a latency, at
// one number of clients and size, for each system over all its runs
// there (their histograms merged). The latency axis is logarithmic.
func latencyCDFPlot(rs []*result, systems []string, clients, size int, subtitle string) *plotPanel {
	who := fmt.Sprintf("%d clients", clients)
	if clients == 1 {
		who = "1 client"
	}
	pn := newPlotPanel(fmt.Sprintf("Write latency CDF, %s × %d B commands\nall runs of a system merged; %s", who, size, subtitle))
	p := pn.p
	p.X.Label.Text = "latency, submit to return (ms, log scale)"
	p.Y.Label.Text = "fraction of applies at most that slow"
	p.X.Tick.Marker = log10Ticks{format: fmtMsTick}
	p.Y.Tick.Marker = plot.ConstantTicks{
		{Value: 0, Label: "0"}, {Value: 0.1}, {Value: 0.2}, {Value: 0.25, Label: "0.25"}, {Value: 0.3}, {Value: 0.4},
		{Value: 0.5, Label: "0.5"}, {Value: 0.6}, {Value: 0.7}, {Value: 0.75, Label: "0.75"}, {Value: 0.8},
		{Value: 0.9, Label: "0.9"}, {Value: 0.99}, {Value: 1, Label: "1"},
	}
	xlo, xhi := math.Inf(1), math.Inf(-1)
	for i, sys := range systems {
		runs := plotRuns(rs, sys, clients, size)
		var h histogram
		for _, r := range runs {
			h.merge(&r.hist)
		}
		var pts plotter.XYs
		for _, c := range h.cdf() {
			if c.v > 0 {
				pts = append(pts, plotter.XY{X: math.Log10(float64(c.v) / 1e6), Y: c.frac})
			}
		}
		if len(pts) == 0 {
			continue
		}
		xlo, xhi = min(xlo, pts[0].X), max(xhi, pts[len(pts)-1].X)
		line, err := plotter.NewLine(pts)
		if err != nil {
			continue
		}
		line.Color, line.Width = systemColors[i%len(systemColors)], vg.Points(1.8)
		line.Dashes = [][]vg.Length{nil, {vg.Points(6), vg.Points(3)}, {vg.Points(2), vg.Points(2)}}[i%3]
		p.Add(line)
		pn.add(fmt.Sprintf("%s: p50 %s, p99 %s, p99.9 %s, max %s (%d runs, %s applies)", sys,
			fmtDur(h.quantile(0.5)), fmtDur(h.quantile(0.99)), fmtDur(h.quantile(0.999)), fmtDur(time.Duration(h.max)),
			len(runs), fmtOps(float64(h.n))), line)
	}
	if math.IsInf(xlo, 0) {
		p.Title.Text += "\n(no applies recorded)"
		xlo, xhi = -1, 1
	}
	pad := max(0.03*(xhi-xlo), 0.02)
	p.X.Min, p.X.Max = xlo-pad, xhi+pad
	p.Y.Min, p.Y.Max = 0, 1
	return pn
}

// savePanels writes the panels to a PNG, two a row, each legend in a
// strip below its chart.
func savePanels(name string, panels []*plotPanel) error {
	cols := min(len(panels), 2)
	rows := (len(panels) + cols - 1) / cols
	entries := 0
	for _, pn := range panels {
		entries = max(entries, pn.entries)
	}
	var strip vg.Length
	if entries > 0 {
		l := panels[0].legend
		strip = vg.Length(entries)*(l.TextStyle.Height("Xg")+l.Padding) + vg.Points(14)
	}
	grid := make([][]*plot.Plot, rows)
	for r := range grid {
		grid[r] = make([]*plot.Plot, cols)
		for c := range grid[r] {
			if i := r*cols + c; i < len(panels) {
				grid[r][c] = panels[i].p
			}
		}
	}
	img := vgimg.NewWith(vgimg.UseWH(panelW*vg.Length(cols), (panelH+strip)*vg.Length(rows)), vgimg.UseDPI(plotDPI))
	dc := draw.New(img)
	pad := vg.Points(12)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: 2 * pad, PadY: 2 * pad, PadTop: pad, PadBottom: pad, PadLeft: pad, PadRight: 2 * pad}
	canvases := plot.Align(grid, tiles, dc)
	for r := range grid {
		for c, p := range grid[r] {
			if p == nil {
				continue
			}
			cv := canvases[r][c]
			p.Draw(draw.Crop(cv, 0, 0, strip, 0))
			// The legend, centred under the chart.
			l := panels[r*cols+c].legend
			lc := draw.Crop(cv, 0, 0, 0, strip-(cv.Max.Y-cv.Min.Y))
			w := l.Rectangle(lc).Size().X
			lc.Min.X = max(lc.Min.X, (lc.Min.X+lc.Max.X-w)/2)
			lc.Max.Y -= vg.Points(6)
			l.Draw(lc)
		}
	}
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", name, err)
	}
	return f.Close()
}

// log10Ticks marks an axis that shows the base-10 logarithms of values: at
// 1, 2 and 5 times the powers of ten (at the powers only, if the axis
// spans more than four of them; at every multiple, if less than one), with
// minor ticks between.
type log10Ticks struct{ format func(float64) string }

func (t log10Ticks) Ticks(lo, hi float64) []plot.Tick {
	if !(hi > lo) || math.IsInf(lo, 0) || math.IsInf(hi, 0) {
		return nil
	}
	e0, e1 := int(math.Floor(lo)), int(math.Ceil(hi))
	var ticks []plot.Tick
	for e := e0; e <= e1; e++ {
		for m := 1; m <= 9; m++ {
			v := float64(m) * math.Pow10(e)
			lv := math.Log10(v)
			if lv < lo-1e-9 || lv > hi+1e-9 {
				continue
			}
			tk := plot.Tick{Value: lv}
			if m == 1 || (hi-lo <= 4 && (m == 2 || m == 5)) || hi-lo < 1 {
				tk.Label = t.format(v)
			}
			ticks = append(ticks, tk)
		}
	}
	return ticks
}

// fmtMsTick formats a tick in milliseconds: 0.05, 0.1, 2, 500.
func fmtMsTick(v float64) string {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 3, 64), 64)
	return strconv.FormatFloat(r, 'f', -1, 64)
}

// fmtOpsTick formats a tick in applies/s: 500, 2k, 100k, 1M.
func fmtOpsTick(v float64) string {
	switch {
	case v >= 1e6:
		return fmtMsTick(v/1e6) + "M"
	case v >= 1e3:
		return fmtMsTick(v/1e3) + "k"
	}
	return fmtMsTick(v)
}
