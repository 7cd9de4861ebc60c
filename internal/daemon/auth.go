package daemon

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// checkAdmin resolves the admin API's file paths (relative to the config
// file) and checks that the token file and TLS files load.
func (c *Config) checkAdmin(bad func(field, format string, args ...any)) {
	rel := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(filepath.Dir(c.path), *p)
		}
	}
	a := &c.Admin
	rel(&a.TokenFile)
	rel(&a.TLS.Cert)
	rel(&a.TLS.Key)
	rel(&a.TLS.ClientCA)
	if a.TokenFile != "" {
		if _, err := loadTokens(a.TokenFile); err != nil {
			bad("admin.tokenFile", "%v", err)
		}
	}
	switch {
	case (a.TLS.Cert == "") != (a.TLS.Key == ""):
		bad("admin.tls", "cert and key go together")
	case a.TLS.ClientCA != "" && a.TLS.Cert == "":
		bad("admin.tls.clientCA", "mTLS needs admin.tls.cert and admin.tls.key")
	case a.TLS.Cert != "":
		if _, err := c.AdminTLSConfig(); err != nil {
			bad("admin.tls", "%v", err)
		}
	}
}

// AdminTLSConfig is the admin listener's TLS configuration, nil when the
// admin API is plain HTTP. With a client CA, clients must present a
// certificate it signed.
func (c *Config) AdminTLSConfig() (*tls.Config, error) {
	a := c.Admin.TLS
	if a.Cert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(a.Cert, a.Key)
	if err != nil {
		return nil, fmt.Errorf("loading the certificate: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if a.ClientCA != "" {
		pem, err := os.ReadFile(a.ClientCA)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", a.ClientCA)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// AdminListener listens on admin.listen, with TLS (and mTLS) when
// configured.
func (d *Daemon) AdminListener() (net.Listener, error) {
	ln, err := net.Listen("tcp", d.cfg.Admin.Listen)
	if err != nil {
		return nil, err
	}
	tc, err := d.cfg.AdminTLSConfig()
	if err != nil {
		ln.Close()
		return nil, err
	}
	ln = &limitListener{Listener: ln, a: &d.adminLim, max: int64(d.cfg.Admin.MaxConnections)} // admin_limits.go
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	return ln, nil
}

// token is one accepted bearer token: its SHA-256 (compared in constant
// time) and the name audit lines use for whoever presents it.
type token struct {
	sum  [sha256.Size]byte
	name string
}

// loadTokens reads a token file: one "TOKEN [NAME]" per line; blank lines
// and lines starting with # are skipped. A token without a name is named
// "token:" + the first 8 hex digits of its SHA-256.
func loadTokens(path string) ([]token, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []token
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) > 2 {
			return nil, fmt.Errorf("%s:%d: want \"TOKEN [NAME]\", got %d fields", path, n, len(f))
		}
		if len(f[0]) < 16 {
			return nil, fmt.Errorf("%s:%d: token shorter than 16 characters", path, n)
		}
		t := token{sum: sha256.Sum256([]byte(f[0]))}
		if len(f) == 2 {
			t.name = "token:" + f[1]
		} else {
			t.name = "token:" + hex.EncodeToString(t.sum[:4])
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no token", path)
	}
	return out, nil
}

type whoKey struct{}

// who names the client of an admin request for audit lines: the token's
// name, the client certificate's CN, and the remote address.
func who(r *http.Request) string {
	var parts []string
	if s, ok := r.Context().Value(whoKey{}).(string); ok && s != "" {
		parts = append(parts, s)
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		parts = append(parts, "cn:"+r.TLS.PeerCertificates[0].Subject.CommonName)
	}
	parts = append(parts, "addr:"+r.RemoteAddr)
	return strings.Join(parts, " ")
}

var errNoToken = errors.New("missing or invalid bearer token")

// authenticate wraps h: with tokens, a request must carry
// "Authorization: Bearer <token>" naming one of them (compared in
// constant time over SHA-256 digests, so neither a token's content nor its
// length leaks through timing).
func authenticate(tokens []token, h http.Handler) http.Handler {
	if len(tokens) == 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		scheme, cred, _ := strings.Cut(auth, " ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(cred)))
		name := ""
		for _, t := range tokens {
			if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
				name = t.name
			}
		}
		if !strings.EqualFold(scheme, "Bearer") || name == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="clusterwall"`)
			writeJSON(w, http.StatusUnauthorized, map[string]any{"error": errNoToken.Error()})
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), whoKey{}, name)))
	})
}
