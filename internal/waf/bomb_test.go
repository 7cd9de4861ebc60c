package waf

import (
	"bytes"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const bombConfig = `
listeners:
  - name: web
    address: 127.0.0.1:0
    limits: {maxBodyBytes: 8MiB}
routes:
  - name: app
    backends: ["$BACKEND"]
policies:
  - name: default
    mode: $MODE
    paranoiaLevel: 1
    requestBodyLimit: 8MiB
`

// manyParts is a well-formed multipart body with n small fields.
func manyParts(n int) []byte {
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "--x\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nv\r\n", i)
	}
	b.WriteString("--x--\r\n")
	return b.Bytes()
}

// heapPeak samples the live heap until stop is closed and returns the
// highest value seen.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// TestArgumentBombs sends bodies that make the WAF hold and inspect a huge
// number of arguments (a multipart body of 60,000 tiny fields, an
// urlencoded form and a JSON object of 60,000 keys, a query string of
// 5,000 parameters), four at a time, while a benign client keeps sending
// requests. Each bomb must get a 400 from the argument-limit rules (200004,
// 200005, 200007; in Detection too, as the body processor's limits are
// not anomaly scoring... they are logged and the request passes), the live
// heap must stay bounded, and the benign requests must keep being served.
func TestArgumentBombs(t *testing.T) {
	if testing.Short() {
		t.Skip("large bodies")
	}
	_, addr := startBackend(t, "b1")
	s, events := startWAF(t, bombConfig, map[string]string{"BACKEND": addr, "MODE": "Prevention"})
	base := baseURL(s, "web")

	const n = 60000
	var form, js strings.Builder
	js.WriteString("{")
	for i := 0; i < n; i++ {
		if i > 0 {
			form.WriteByte('&')
			js.WriteByte(',')
		}
		fmt.Fprintf(&form, "f%d=v", i)
		fmt.Fprintf(&js, `"f%d":1`, i)
	}
	js.WriteString("}")
	var query strings.Builder
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(&query, "&q%d=1", i)
	}
	bombs := []struct {
		name, method, path, ctype string
		body                      []byte
		rule                      int
	}{
		{"multipart fields", "POST", "/upload", "multipart/form-data; boundary=x", manyParts(n), 200007},
		{"urlencoded form", "POST", "/form", "application/x-www-form-urlencoded", []byte(form.String()), 200005},
		{"JSON object", "POST", "/api", "application/json", []byte(js.String()), 200005},
		{"query string", "GET", "/search?" + query.String()[1:], "", nil, 200004},
	}

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseline := ms.HeapAlloc
	stop := make(chan struct{})
	peakc := heapPeak(stop)

	// The benign client.
	var served, benignFailed atomic.Int64
	benignDone := make(chan struct{})
	go func() {
		defer close(benignDone)
		c := &http.Client{Timeout: 30 * time.Second}
		for {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest("GET", base+"/products?id=7", nil)
			req.Header.Set("User-Agent", "Mozilla/5.0")
			req.Header.Set("Accept", "text/html")
			res, err := c.Do(req)
			if err != nil || res.StatusCode != 200 {
				benignFailed.Add(1)
			} else {
				served.Add(1)
			}
			if res != nil {
				res.Body.Close()
			}
		}
	}()

	start := time.Now()
	var wg sync.WaitGroup
	for _, b := range bombs {
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(b.method, base+b.path, bytes.NewReader(b.body))
				req.Header.Set("User-Agent", "Mozilla/5.0")
				req.Header.Set("Accept", "*/*")
				if b.ctype != "" {
					req.Header.Set("Content-Type", b.ctype)
				}
				res, body := do(t, req)
				if res.StatusCode != http.StatusBadRequest {
					t.Errorf("%s: status %d, want 400: %.200s", b.name, res.StatusCode, body)
					return
				}
				e := events.eventFor(t, res.Header.Get("X-Correlation-Id"))
				if e == nil || !containsInt(e.RuleIDs, b.rule) {
					t.Errorf("%s: event %+v, want rule %d", b.name, e, b.rule)
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	time.Sleep(50 * time.Millisecond)
	close(stop)
	peak := <-peakc
	<-benignDone

	growth := int64(peak) - int64(baseline)
	t.Logf("16 bombs in %s; heap %d MiB -> peak %d MiB (+%d MiB); benign served %d, failed %d",
		elapsed.Round(time.Millisecond), baseline>>20, peak>>20, growth>>20, served.Load(), benignFailed.Load())
	// The bodies themselves (about 1 MiB each, 16 in flight, plus the
	// client's copies) and Coraza's per-request buffers account for most of
	// it; without the limits the 60,000 arguments of each request are all
	// kept and inspected (measured: several hundred MiB and minutes of CPU).
	if growth > 256<<20 {
		t.Errorf("heap grew by %d MiB", growth>>20)
	}
	if served.Load() == 0 || benignFailed.Load() > 0 {
		t.Errorf("benign requests: %d served, %d failed while the bombs ran", served.Load(), benignFailed.Load())
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
