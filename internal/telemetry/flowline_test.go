package telemetry

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

// flowLine is what FlowLine and a TimeCache write for tmpl with the flow's
// fields set (the caller's Quote of each string), and what AppendJSON
// writes for the same record.
func flowLine(t testing.TB, tc *TimeCache, tmpl Record, ft time.Time, src, dst, proto string, sport, dport int) (got, want []byte, gerr, werr error) {
	t.Helper()
	fl, err := NewFlowLine(&tmpl)
	r := tmpl
	r.Time, r.SourceIp, r.SourcePort, r.DestinationIp, r.DestinationPort, r.Protocol = ft, src, sport, dst, dport, proto
	want, werr = AppendJSON([]byte("x"), &r)
	if err != nil {
		return nil, want, err, werr
	}
	got, gerr = fl.Append([]byte("x"), tc, &Flow{Time: ft, SourceIp: Quote(src), SourcePort: sport, DestinationIp: Quote(dst), DestinationPort: dport, Protocol: Quote(proto)})
	return got, want, gerr, werr
}

// TestFlowLineEqualsAppendJSON: FlowLine writes AppendJSON's bytes for
// templates with every field set (fillAll: a field FlowLine forgot shows
// here) and each field alone, and for times through one TimeCache: within
// a second, across seconds, back in time, whole seconds, trailing zeros,
// local times and years RFC 3339 cannot write (the same error).
func TestFlowLineEqualsAppendJSON(t *testing.T) {
	full := fillAll("x<&>\u2028", 7)
	templates := []Record{full, {Category: CategoryNetworkRule}, {}}
	for _, f := range recordFields {
		r := Record{}
		switch f {
		case "Action":
			r.Action = "Allow"
		case "Rule":
			r.Rule = "r\"1"
		case "TranslatedPort":
			r.TranslatedPort = 80
		case "RuleIds":
			r.RuleIds = []int{1}
		case "RequestDurationSecs":
			r.RequestDurationSecs = 1e-7
		}
		templates = append(templates, r)
	}
	base := time.Date(2026, 12, 6, 15, 0, 59, 999999999, time.UTC)
	times := []time.Time{base, base.Add(1), base.Add(2), base.Add(-1), base.Add(-999999999), base.Add(1e6 + 1), base.Add(1e9),
		base.Add(-3600e9), base.In(time.FixedZone("x", 3600)), base.In(time.FixedZone("y", -24*3600)), time.Date(10000, 1, 1, 0, 0, 0, 1, time.UTC),
		base.Add(7), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), time.Unix(0, 0).UTC(), base.Add(100)}
	var tc TimeCache
	n := 0
	for _, tmpl := range templates {
		for _, ft := range times {
			for _, flow := range [][5]string{{"10.42.1.10", "192.0.2.10", "TCP"}, {"", "", ""}, {"2001:db8::1", "<\xff>", "132"}} {
				got, want, gerr, werr := flowLine(t, &tc, tmpl, ft, flow[0], flow[1], flow[2], n%3*40000, n%5*443)
				n++
				if (gerr != nil) != (werr != nil) || !bytes.Equal(got, want) {
					t.Fatalf("time %v, flow %q:\n got %s (%v)\nwant %s (%v)", ft, flow, got, gerr, want, werr)
				}
			}
		}
	}
	if f, err := NewFlowLine(&Record{RequestDurationSecs: 1 / zero()}); f != nil || err == nil {
		t.Error("a template AppendJSON cannot write gives a FlowLine")
	}
}

func zero() float64 { return 0 }

// FuzzFlowLine: FlowLine and AppendJSON write the same bytes, or fail
// together, for any strings (names from the policy and flows' fields are
// the caller's) and times.
func FuzzFlowLine(f *testing.F) {
	f.Add("AZFWNetworkRule", "Allow", "web", "10.42.1.10", "192.0.2.10", "TCP", 40000, 443, int64(1765033200123456789), int64(1000), 0)
	f.Add("\u2028", "<&>", "\xff\x00", "", "\"", "", -1, 0, int64(-9e18), int64(-1), 3600)
	f.Fuzz(func(t *testing.T, category, action, rule, src, dst, proto string, sport, dport int, ns, step int64, offset int) {
		var tc TimeCache
		tmpl := Record{Category: category, Action: action, Rule: rule, RuleCollection: rule + action, Source: "kernel", TranslatedPort: dport}
		for i := range int64(3) {
			ft := time.Unix(0, ns+i*step).UTC()
			if offset != 0 {
				ft = ft.In(time.FixedZone("z", offset))
			}
			got, want, gerr, werr := flowLine(t, &tc, tmpl, ft, src, dst, proto, sport, dport)
			if (gerr != nil) != (werr != nil) || !bytes.Equal(got, want) {
				t.Fatalf("time %v:\n got %s (%v)\nwant %s (%v)", ft, got, gerr, want, werr)
			}
		}
	})
}

// TestLinesWrittenAndDropped: lines a producer encodes reach the sink whole
// and in order, between the queue's records, and Close writes them all; a
// batch the writer has no room for is counted as dropped, line by line.
func TestLinesWrittenAndDropped(t *testing.T) {
	var buf bytes.Buffer
	l := NewDecisionLog(&buf, Options{})
	w := l.Lines()
	var want strings.Builder
	for i := range 3000 {
		r := Record{Category: CategoryNetworkRule, SourcePort: i + 1, Time: time.Unix(int64(i), 0).UTC()}
		if !w.Admit(&r) {
			t.Fatal("Admit without a rate limit refused a line")
		}
		line, _ := AppendJSON(nil, &r)
		want.Write(line)
		w.Commit(append(w.Buf(), line...))
		if i%700 == 0 {
			w.Flush()
		}
	}
	w.Flush()
	l.Close()
	if buf.String() != want.String() {
		t.Fatalf("written %d bytes, want %d", buf.Len(), want.Len())
	}
	if written, dropped, _ := l.Stats(); written != 3000 || dropped != 0 {
		t.Errorf("written %d, dropped %d", written, dropped)
	}

	// A stuck sink: the Lines' bound (4 × 8 lines) holds the first batches; the
	// next ones are dropped and counted.
	bw := blockingWriter{release: make(chan struct{})}
	l = NewDecisionLog(bw, Options{Queue: 8})
	w = l.Lines()
	for i := range 100 {
		r := Record{Category: CategoryNetworkRule, Time: time.Now()}
		if !w.Admit(&r) {
			t.Fatal("Admit refused a line")
		}
		line, _ := AppendJSON(nil, &r)
		w.Commit(append(w.Buf(), line...))
		if i%5 == 4 {
			w.Flush()
		}
	}
	time.Sleep(100 * time.Millisecond)
	waiting, bound := l.QueueFill()
	_, dropped, _ := l.Stats()
	close(bw.release)
	l.Close()
	written, _, _ := l.Stats()
	if written+dropped != 100 || dropped < 100-4*8-5 || waiting > bound {
		t.Errorf("written %d, dropped %d of 100 lines; queue %d of %d", written, dropped, waiting, bound)
	}

	// With an OnWrite hook the records go through the queue.
	var seen int
	l = NewDecisionLog(io.Discard, Options{OnWrite: func(Record) { seen++ }})
	w = l.Lines()
	r := Record{Category: CategoryNetworkRule}
	if w.Admit(&r) {
		t.Error("Admit let a line be encoded by the caller with an OnWrite hook")
	}
	l.Close()
	if seen != 1 {
		t.Errorf("OnWrite saw %d records", seen)
	}
}

func BenchmarkFlowLine(b *testing.B) {
	tmpl := Record{Category: CategoryNetworkRule, Action: "Allow", Policy: "bench", RuleCollectionGroup: "g", RuleCollection: "c", Rule: "web", Source: "kernel"}
	fl, _ := NewFlowLine(&tmpl)
	var tc TimeCache
	flow := Flow{Time: time.Now().UTC(), SourceIp: Quote("10.42.1.10"), SourcePort: 40000, DestinationIp: Quote("192.0.2.10"), DestinationPort: 443, Protocol: Quote("TCP")}
	r := tmpl
	r.SourceIp, r.SourcePort, r.DestinationIp, r.DestinationPort, r.Protocol = "10.42.1.10", 40000, "192.0.2.10", 443, "TCP"
	var buf []byte
	b.Run("FlowLine", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			flow.Time = flow.Time.Add(time.Microsecond)
			buf, _ = fl.Append(buf[:0], &tc, &flow)
		}
	})
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			r.Time = r.Time.Add(time.Microsecond)
			buf, _ = AppendJSON(buf[:0], &r)
		}
	})
}
