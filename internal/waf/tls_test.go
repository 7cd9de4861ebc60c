package waf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeTestCert writes a self-signed certificate for name as dir/base.crt
// and dir/base.key.
func writeTestCert(t testing.TB, dir, base, name string) {
	t.Helper()
	certPEM, keyPEM := testCertPEM(t, name, name)
	os.WriteFile(filepath.Join(dir, base+".crt"), []byte(certPEM), 0o644)
	os.WriteFile(filepath.Join(dir, base+".key"), []byte(keyPEM), 0o600)
}

// testCertPEM returns a self-signed certificate for DNS name with common
// name cn, and its key, as PEM.
func testCertPEM(t testing.TB, name, cn string) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
}

func TestHTTPSWithSNI(t *testing.T) {
	dir := t.TempDir()
	writeTestCert(t, dir, "store", "store.example.com")
	writeTestCert(t, dir, "api", "api.example.com")
	_, addr := startBackend(t, "b1")
	s, _ := startWAF(t, `
listeners:
  - name: https
    address: 127.0.0.1:0
    tls:
      certificates:
        - certFile: $DIR/store.crt
          keyFile: $DIR/store.key
        - certFile: $DIR/api.crt
          keyFile: $DIR/api.key
          serverNames: [api.example.com, "*.api.example.com"]
routes:
  - name: app
    backends: ["$BACKEND"]
policies:
  - name: default
`, map[string]string{"DIR": dir, "BACKEND": addr})
	for _, name := range []string{"store.example.com", "api.example.com", "v2.api.example.com"} {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: name, InsecureSkipVerify: true}}}
		req, _ := http.NewRequest("GET", "https://"+s.Addr("https").String()+"/", nil)
		req.Host = name
		req.Header.Set("User-Agent", "Mozilla/5.0")
		req.Header.Set("Accept", "*/*")
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		cn := res.TLS.PeerCertificates[0].Subject.CommonName
		want := "store.example.com"
		if name != "store.example.com" {
			want = "api.example.com"
		}
		if cn != want {
			t.Errorf("SNI %s got certificate %s", name, cn)
		}
		var e echo
		json.Unmarshal(body, &e)
		if e.Header.Get("X-Forwarded-Proto") != "https" {
			t.Errorf("X-Forwarded-Proto = %q", e.Header.Get("X-Forwarded-Proto"))
		}
	}
}

func TestTrustedProxyClientIP(t *testing.T) {
	_, addr := startBackend(t, "b1")
	s, events := startWAF(t, `
listeners:
  - name: web
    address: 127.0.0.1:0
    trustedProxies: [127.0.0.0/8]
routes:
  - name: app
    backends: ["$BACKEND"]
policies:
  - name: default
`, map[string]string{"BACKEND": addr})
	res, body := get(t, baseURL(s, "web")+"/?q=<script>alert(1)</script>", "User-Agent", "Mozilla/5.0", "Accept", "*/*",
		"X-Forwarded-For", "203.0.113.9, 127.0.0.5", "X-Forwarded-Proto", "https")
	ev := events.eventFor(t, res.Header.Get("X-Correlation-Id"))
	if ev == nil || ev.ClientIP != "203.0.113.9" {
		t.Errorf("client IP through a trusted proxy: %+v", ev)
	}
	_ = body
	res, body = get(t, baseURL(s, "web")+"/", "User-Agent", "Mozilla/5.0", "Accept", "*/*", "X-Forwarded-For", "203.0.113.9", "X-Forwarded-Proto", "https")
	var e echo
	json.Unmarshal([]byte(body), &e)
	if e.Header.Get("X-Forwarded-For") != "203.0.113.9, 127.0.0.1" || e.Header.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("forwarded headers: %v", e.Header)
	}
}
