package waf

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// BenchmarkWAFBenign measures benign GETs through the WAF (PL1,
// Prevention) to a loopback backend over real HTTP with keep-alive;
// it reports requests per second.
func BenchmarkWAFBenign(b *testing.B) {
	_, addr := startBackend(b, "bench")
	s, _ := startWAF(b, simpleConfig, map[string]string{"BACKEND": addr, "MODE": "Prevention"})
	url := baseURL(s, "web") + "/products/42?sort=price&page=2"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Host = "shop.example.com"
			req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36")
			req.Header.Set("Accept", "text/html,application/xhtml+xml")
			req.Header.Set("Accept-Language", "en-US,en;q=0.9")
			res, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				b.Errorf("status %d", res.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}
