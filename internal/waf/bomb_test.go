package waf

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
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

// TestArgumentBombs sends bodies that would make the WAF hold and inspect
// a huge number of arguments (a multipart body of 60,000 tiny fields, an
// urlencoded form and a JSON object of 60,000 keys, a query string of 1,500
// parameters), four of each at once, while a benign client keeps sending
// requests. Each bomb must be refused with 400 and logged as Blocked (the
// argument-limit rules 200004/200005, or the multipart part count before
// Coraza parses the body), the live heap must stay bounded, and the benign
// requests must keep being served. (Measured before the part count: the
// heap peaked 230 MiB above the baseline, about 55 MiB per multipart bomb;
// with it, about 25 MiB.)
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
	for i := 0; i < 1500; i++ {
		fmt.Fprintf(&query, "&q%d=1", i)
	}
	bombs := []struct {
		name, method, path, ctype string
		body                      []byte
		rule                      int    // the rule that refuses it, or
		reason                    string // the reason of a refusal before the rules
	}{
		{"multipart fields", "POST", "/upload", "multipart/form-data; boundary=x", manyParts(n), 0, "more than 1000 parts"},
		{"urlencoded form", "POST", "/form", "application/x-www-form-urlencoded", []byte(form.String()), 200005, ""},
		{"JSON object", "POST", "/api", "application/json", []byte(js.String()), 200005, ""},
		{"query string", "GET", "/search?" + query.String()[1:], "", nil, 200004, ""},
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
				res, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
				if err != nil {
					// Refused before the whole body was sent: the server
					// answers and closes, the client may see the reset
					// before the answer. The event below still counts.
					if b.reason == "" {
						t.Errorf("%s: %v", b.name, err)
					}
					return
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusBadRequest {
					t.Errorf("%s: status %d, want 400: %.200s", b.name, res.StatusCode, body)
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

	for _, b := range bombs {
		refused := 0
		for _, e := range events.events(t) {
			if !strings.HasPrefix(e.URI, b.path) || e.Action != ActionBlocked || e.Status != http.StatusBadRequest {
				continue
			}
			if b.rule != 0 && containsInt(e.RuleIDs, b.rule) || b.reason != "" && strings.Contains(e.Reason, b.reason) {
				refused++
			}
		}
		if refused != 4 {
			t.Errorf("%s: %d of 4 logged as refused (rule %d, reason %q)", b.name, refused, b.rule, b.reason)
		}
	}
	growth := int64(peak) - int64(baseline)
	t.Logf("16 bombs in %s; heap %d MiB -> peak %d MiB (+%d MiB); benign served %d, failed %d",
		elapsed.Round(time.Millisecond), baseline>>20, peak>>20, growth>>20, served.Load(), benignFailed.Load())
	// The bodies (up to 3.3 MiB each, 16 in flight, client and server
	// side) and Coraza's buffers; 100 MiB leaves room for a loaded machine.
	if growth > 100<<20 {
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

func TestPartCounter(t *testing.T) {
	body := string(manyParts(5)) // 5 parts and the closing delimiter
	for _, tt := range []struct {
		name    string
		limit   int
		wantErr bool
	}{
		{"under", 5, false},
		{"over", 4, true},
	} {
		for _, oneByte := range []bool{false, true} {
			req, _ := http.NewRequest("POST", "/", strings.NewReader(body))
			req.Header.Set("Content-Type", "multipart/form-data; boundary=x")
			if oneByte {
				// Every delimiter is split across reads.
				req.Body = io.NopCloser(iotest.OneByteReader(strings.NewReader(body)))
			}
			limitMultipartParts(req, tt.limit)
			_, err := io.ReadAll(req.Body)
			if (err != nil) != tt.wantErr {
				t.Errorf("%s (one byte at a time: %v): err = %v", tt.name, oneByte, err)
			}
		}
	}
	// Not multipart: untouched.
	req, _ := http.NewRequest("POST", "/", strings.NewReader(body))
	req.Header.Set("Content-Type", "text/plain")
	limitMultipartParts(req, 1)
	if _, err := io.ReadAll(req.Body); err != nil {
		t.Error(err)
	}
}

// TestSlowBody: a client that sends its body a byte at a time is cut off
// at the listener's read timeout (2s here) with 408 Request Timeout (not
// Go's default empty 200), and the listener keeps serving others meanwhile.
func TestSlowBody(t *testing.T) {
	_, addr := startBackend(t, "b1")
	s, _ := startWAF(t, hostileConfig, map[string]string{"BACKEND": addr})
	waddr := s.Addr("web").String()
	c, err := net.Dial("tcp", waddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /form HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\na=")
	start := time.Now()
	done := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(c)
		done <- string(b)
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var answer string
	served := 0
loop:
	for {
		select {
		case answer = <-done:
			break loop
		case <-tick.C:
			c.Write([]byte("b"))
			if served < 3 {
				code, _, err := rawExchange(t, waddr, "GET / HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n")
				if err != nil || code != 200 {
					t.Errorf("others not served while a slow body is read: %d %v", code, err)
				}
				served++
			}
			if time.Since(start) > 8*time.Second {
				t.Fatal("the slow body was not cut off after 8s")
			}
		}
	}
	d := time.Since(start)
	if d < 1500*time.Millisecond || d > 5*time.Second {
		t.Errorf("cut off after %s, want about the 2s read timeout", d)
	}
	if !strings.HasPrefix(answer, "HTTP/1.1 408 ") {
		t.Errorf("answer to the slow body: %.100q, want 408 Request Timeout", answer)
	}
	t.Logf("slow body cut off after %s, answer %.40q", d.Round(time.Millisecond), answer)
}
