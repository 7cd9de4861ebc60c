package waf

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/corazawaf/coraza/v3/experimental/plugins"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
)

// benchMix is bench/waf/mix.lua's request mix (the requests wrk sends,
// header for header): a GET with a query string, an urlencoded form and a
// JSON body.
var benchMix = []struct {
	method, target, ctype, body string
}{
	{"GET", "/products?id=42&category=books&sort=price", "", ""},
	{"POST", "/login", "application/x-www-form-urlencoded", "username=alice&password=correct+horse+battery&remember=on"},
	{"POST", "/api/orders", "application/json", `{"customer":"alice","items":[{"sku":"B-1234","qty":2},{"sku":"C-77","qty":1}],"note":"leave it at the door"}`},
}

func benchMixRequest(i int) *http.Request {
	m := benchMix[i%len(benchMix)]
	var r *http.Request
	if m.body != "" {
		r = httptest.NewRequest(m.method, m.target, strings.NewReader(m.body))
		r.Header.Set("Content-Type", m.ctype)
		r.Header.Set("Content-Length", strconv.Itoa(len(m.body)))
	} else {
		r = httptest.NewRequest(m.method, m.target, nil)
	}
	r.Host = "127.0.0.1:8083"
	r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) wrk-bench")
	r.Header.Set("Accept", "text/html,application/json;q=0.9,*/*;q=0.8")
	r.Header.Set("Accept-Language", "en-GB,en;q=0.5")
	return r
}

// BenchmarkEngineMix runs Coraza (CRS 4.25.0, PL1, Prevention) over
// bench/waf.sh's request mix in process: phases 1 and 2 as the handler
// feeds them, the response headers (phase 3) and logging, without HTTP.
// It is the part of the WAF's CPU the engine spends (about 80 % under
// bench/waf.sh); one op is one request.
func BenchmarkEngineMix(b *testing.B) {
	cfg := mustConfig(b, simpleConfig, map[string]string{"BACKEND": "127.0.0.1:1", "MODE": "Prevention"})
	p := cfg.Policies[0]
	reqs := make([]*http.Request, 0, b.N)
	for i := 0; i < b.N; i++ {
		reqs = append(reqs, benchMixRequest(i))
	}
	server := netip.MustParseAddrPort("127.0.0.1:8083")
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		r := reqs[i]
		tx := p.waf.NewTransaction()
		it, err := inspectRequest(tx, r, "127.0.0.1", 40000+i%20000, server)
		if err != nil || it != nil {
			b.Fatalf("request %d: interruption %v, error %v", i, it, err)
		}
		tx.AddResponseHeader("Content-Type", "text/plain")
		if it := tx.ProcessResponseHeaders(200, "HTTP/1.1"); it != nil {
			b.Fatalf("response interrupted: %v", it)
		}
		tx.ProcessLogging()
		tx.Close()
	}
	b.StopTimer()
	// The process's CPU time (GC workers included) is steadier than wall
	// time on a shared machine.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N)/1e3, "cpu-µs/op")
}

// processCPU is the process's user + system CPU time in nanoseconds.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// rxCall is one evaluation of @rx: the operator and the value.
type rxCall struct {
	op    *rxOperator
	value string
}

// recordingRX wraps rxOperator to see what the CRS evaluates.
type recordingRX struct {
	op    *rxOperator
	calls *[]rxCall
}

func (r recordingRX) Evaluate(tx plugintypes.TransactionState, v string) bool {
	*r.calls = append(*r.calls, rxCall{r.op, v})
	return r.op.Evaluate(tx, v)
}

// mixRXCalls runs the bench mix once through a policy compiled with a
// recording @rx and returns every @rx evaluation.
func mixRXCalls(tb testing.TB) []rxCall {
	registerOperators()
	var calls []rxCall
	plugins.RegisterOperator("rx", func(o plugintypes.OperatorOptions) (plugintypes.Operator, error) {
		op, err := newRXOperator(o)
		if rx, ok := op.(*rxOperator); ok {
			return recordingRX{rx, &calls}, nil
		}
		return op, err
	})
	defer plugins.RegisterOperator("rx", newRXOperator)
	cfg := mustConfig(tb, simpleConfig, map[string]string{"BACKEND": "127.0.0.1:1", "MODE": "Prevention"})
	p := cfg.Policies[0]
	for i := range benchMix {
		tx := p.waf.NewTransaction()
		if it, err := inspectRequest(tx, benchMixRequest(i), "127.0.0.1", 40000, netip.MustParseAddrPort("127.0.0.1:8083")); it != nil || err != nil {
			tb.Fatalf("request %d: interruption %v, error %v", i, it, err)
		}
		tx.ProcessResponseHeaders(200, "HTTP/1.1")
		tx.ProcessLogging()
		tx.Close()
	}
	return calls
}

// BenchmarkRXMix evaluates the @rx calls of one round of the bench mix
// (the three requests), with each matcher alone; one op is the whole round.
func BenchmarkRXMix(b *testing.B) {
	calls := mixRXCalls(b)
	filtered := 0
	for _, c := range calls {
		if c.op.c.pf != nil && !c.op.c.pf.mayMatch(c.value) {
			filtered++
		}
	}
	b.Logf("%d @rx evaluations, %d (%.0f %%) answered by the prefilter", len(calls), filtered, 100*float64(filtered)/float64(len(calls)))
	run := func(b *testing.B, f func(c rxCall) bool) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			for _, c := range calls {
				f(c)
			}
		}
	}
	b.Run("go-regexp", func(b *testing.B) {
		run(b, func(c rxCall) bool { return c.op.c.goRegexp().MatchString(c.value) })
	})
	b.Run("re2", func(b *testing.B) {
		run(b, func(c rxCall) bool { return c.op.c.re.MatchString(c.value) })
	})
	b.Run("prefilter", func(b *testing.B) {
		run(b, func(c rxCall) bool { return c.op.c.pf == nil || c.op.c.pf.mayMatch(c.value) })
	})
	b.Run("prefilter+re2", func(b *testing.B) {
		run(b, func(c rxCall) bool {
			if c.op.c.pf != nil && !c.op.c.pf.mayMatch(c.value) {
				return false
			}
			return c.op.c.re.MatchString(c.value)
		})
	})
}
