package waf

import (
	"bytes"
	"net/http"
	"net/netip"
	"testing"
)

func benchTx(b *testing.B, ctype, body string) {
	cfg := mustConfig(b, simpleConfig, map[string]string{"BACKEND": "127.0.0.1:1", "MODE": "Prevention"})
	pol := cfg.Policies[0]
	if pol.waf == nil {
		if err := pol.compile(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, _ := http.NewRequest("POST", "http://shop.example.com/api/orders", bytes.NewReader([]byte(body)))
		if body == "" {
			r.Method = "GET"
			r.Body = http.NoBody
		}
		r.RequestURI = "/api/orders?x=1"
		r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) wrk-bench")
		r.Header.Set("Accept", "text/html")
		if ctype != "" {
			r.Header.Set("Content-Type", ctype)
		}
		tx := pol.waf.NewTransaction()
		it, err := inspectRequest(tx, r, "127.0.0.1", 5000, netip.AddrPort{})
		if it != nil || err != nil {
			b.Fatal(it, err)
		}
		tx.ProcessLogging()
		tx.Close()
	}
}

func BenchmarkTxGet(b *testing.B) { benchTx(b, "", "") }
func BenchmarkTxForm(b *testing.B) {
	benchTx(b, "application/x-www-form-urlencoded", "username=alice&password=correct+horse+battery&remember=on")
}
func BenchmarkTxJSON(b *testing.B) {
	benchTx(b, "application/json", `{"customer":"alice","items":[{"sku":"B-1234","qty":2},{"sku":"C-77","qty":1}],"note":"leave it at the door"}`)
}
