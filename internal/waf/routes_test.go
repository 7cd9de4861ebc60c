package waf

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// routesConfig has a route for every kind of match and filter; backends
// are named after their route so that a test sees which one answered.
const routesConfig = `
listeners:
  - name: web
    address: 127.0.0.1:0
routes:
  - name: any-host
    backends: ["$ANY"]
  - name: exact-host
    hosts: [shop.example.com]
    backends: ["$EXHOST"]
  - name: wildcard
    hosts: ["*.example.com"]
    backends: ["$WILD"]
  - name: single-label
    hosts: ["*.ingress.test"]
    wildcardMatch: SingleLabel
    backends: ["$SINGLE"]
  - name: prefix-api
    hosts: [shop.example.com]
    pathPrefix: /api
    backends: ["$PFXA"]
  - name: prefix-api-v1
    hosts: [shop.example.com]
    pathPrefix: /api/v1/
    backends: ["$PFXB"]
  - name: exact-api
    hosts: [shop.example.com]
    pathExact: /api
    backends: ["$EXACT"]
  - name: method
    hosts: [shop.example.com]
    pathPrefix: /api
    method: POST
    backends: ["$METH"]
  - name: header
    hosts: [shop.example.com]
    pathPrefix: /api
    headers: [{name: x-version, value: "2"}]
    backends: ["$HDRA"]
  - name: two-headers
    hosts: [shop.example.com]
    pathPrefix: /api
    headers: [{name: X-Version, value: "2"}, {name: x-canary, value: "^(yes|true)$", type: RegularExpression}]
    backends: ["$HDRB"]
  - name: query
    hosts: [shop.example.com]
    pathPrefix: /api
    queryParams: [{name: Mode, value: beta}]
    backends: ["$QRY"]
  - name: modify
    hosts: [modify.example.net]
    requestHeaders: {set: [{name: X-Set, value: set}], add: [{name: X-Add, value: added}], remove: [X-Remove]}
    responseHeaders: {set: [{name: X-Resp, value: r1}], remove: [X-Backend]}
    backends: ["$MOD"]
policies:
  - name: default
    mode: Prevention
`

func TestRouteMatches(t *testing.T) {
	vars := map[string]string{}
	for _, n := range []string{"ANY", "EXHOST", "WILD", "SINGLE", "PFXA", "PFXB", "EXACT", "METH", "HDRA", "HDRB", "QRY", "MOD"} {
		_, vars[n] = startBackend(t, strings.ToLower(n))
	}
	s, _ := startWAF(t, routesConfig, vars)
	base := baseURL(s, "web")
	tests := []struct {
		name, method, host, path string
		hdr                      []string
		want                     string // backend, or a status
	}{
		{"any host", "GET", "other.test", "/", nil, "any"},
		{"exact host before wildcard", "GET", "shop.example.com", "/", nil, "exhost"},
		{"host is case-insensitive, port ignored", "GET", "SHOP.Example.com:8080", "/", nil, "exhost"},
		{"wildcard, one label", "GET", "a.example.com", "/", nil, "wild"},
		{"wildcard suffix, two labels", "GET", "a.b.example.com", "/", nil, "wild"},
		{"wildcard does not match the bare domain", "GET", "example.com", "/", nil, "any"},
		{"single-label wildcard, one label", "GET", "a.ingress.test", "/", nil, "single"},
		{"single-label wildcard, two labels", "GET", "a.b.ingress.test", "/", nil, "any"},
		{"exact path before prefix of equal length", "GET", "shop.example.com", "/api", nil, "exact"},
		{"prefix: whole segments", "GET", "shop.example.com", "/api/x", nil, "pfxa"},
		{"prefix: trailing slash", "GET", "shop.example.com", "/api/", nil, "pfxa"},
		{"prefix: not a partial segment", "GET", "shop.example.com", "/apix", nil, "exhost"},
		{"longest prefix, its trailing slash ignored", "GET", "shop.example.com", "/api/v1", nil, "pfxb"},
		{"longest prefix below", "GET", "shop.example.com", "/api/v1/items", nil, "pfxb"},
		{"exact path is case-sensitive", "GET", "shop.example.com", "/API", nil, "exhost"},
		{"method match", "POST", "shop.example.com", "/api/x", nil, "meth"},
		{"method match beats headers", "POST", "shop.example.com", "/api/x", []string{"X-Version", "2"}, "meth"},
		{"method mismatch", "OPTIONS", "shop.example.com", "/api/x", nil, "pfxa"},
		{"header match", "GET", "shop.example.com", "/api/x", []string{"X-Version", "2"}, "hdra"},
		{"header name case-insensitive", "GET", "shop.example.com", "/api/x", []string{"x-VERSION", "2"}, "hdra"},
		{"header value mismatch", "GET", "shop.example.com", "/api/x", []string{"X-Version", "3"}, "pfxa"},
		{"more header matches win", "GET", "shop.example.com", "/api/x", []string{"X-Version", "2", "X-Canary", "yes"}, "hdrb"},
		{"regular expression header mismatch", "GET", "shop.example.com", "/api/x", []string{"X-Version", "2", "X-Canary", "yesno"}, "hdra"},
		{"headers beat query", "GET", "shop.example.com", "/api/x?Mode=beta", []string{"X-Version", "2"}, "hdra"},
		{"query match", "GET", "shop.example.com", "/api/x?Mode=beta&x=1", nil, "qry"},
		{"query name case-sensitive", "GET", "shop.example.com", "/api/x?mode=beta", nil, "pfxa"},
		{"query first value counts", "GET", "shop.example.com", "/api/x?Mode=alpha&Mode=beta", nil, "pfxa"},
		{"exact path is not reached with matches on prefix", "GET", "shop.example.com", "/api?Mode=beta", nil, "exact"},
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, base+tt.path, nil)
			req.Host = tt.host
			req.Header.Set("User-Agent", "Mozilla/5.0")
			req.Header.Set("Accept", "*/*")
			for i := 0; i+1 < len(tt.hdr); i += 2 {
				req.Header.Set(tt.hdr[i], tt.hdr[i+1])
			}
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var e echo
			json.NewDecoder(res.Body).Decode(&e)
			if res.StatusCode != 200 || e.Backend != tt.want {
				t.Errorf("%s %s%s: %d from %q, want %s", tt.method, tt.host, tt.path, res.StatusCode, e.Backend, tt.want)
			}
		})
	}

	t.Run("header filters", func(t *testing.T) {
		req, _ := http.NewRequest("GET", base+"/", nil)
		req.Host = "modify.example.net"
		req.Header.Set("User-Agent", "Mozilla/5.0")
		req.Header.Set("Accept", "*/*")
		req.Header.Set("X-Set", "client")
		req.Header.Set("X-Add", "client")
		req.Header.Set("X-Remove", "client")
		res, body := do(t, req)
		var e echo
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatal(err)
		}
		if got := e.Header.Values("X-Set"); len(got) != 1 || got[0] != "set" {
			t.Errorf("X-Set at the backend: %q", got)
		}
		if got := e.Header.Values("X-Add"); strings.Join(got, ",") != "client,added" {
			t.Errorf("X-Add at the backend: %q", got)
		}
		if got := e.Header.Values("X-Remove"); len(got) != 0 {
			t.Errorf("X-Remove reached the backend: %q", got)
		}
		if res.Header.Get("X-Resp") != "r1" || res.Header.Get("X-Backend") != "" {
			t.Errorf("response headers: X-Resp %q X-Backend %q", res.Header.Get("X-Resp"), res.Header.Get("X-Backend"))
		}
	})
}

func TestRedirects(t *testing.T) {
	s, _ := startWAF(t, `
listeners:
  - name: web
    address: 127.0.0.1:0
routes:
  - name: to-https
    hosts: [shop.example.com]
    redirect: {scheme: https, statusCode: 308}
  - name: moved
    hosts: [old.example.com]
    pathPrefix: /old
    redirect: {hostname: new.example.com, port: 8443, path: {type: ReplacePrefixMatch, value: /new}, statusCode: 301}
  - name: root
    hosts: [old.example.com]
    pathPrefix: /strip
    redirect: {path: {type: ReplacePrefixMatch, value: /}}
  - name: full
    hosts: [old.example.com]
    pathExact: /full
    redirect: {scheme: http, path: {type: ReplaceFullPath, value: /elsewhere}}
  - name: same-scheme
    hosts: [port.example.com]
    redirect: {hostname: www.example.com}
policies:
  - name: default
`, nil)
	port := s.Addr("web").(interface{ String() string }).String()
	port = port[strings.LastIndexByte(port, ':')+1:]
	tests := []struct {
		host, path string
		status     int
		location   string
	}{
		{"shop.example.com", "/a/b?x=1&y=2", 308, "https://shop.example.com/a/b?x=1&y=2"},
		{"shop.example.com:" + port, "/", 308, "https://shop.example.com/"},
		{"old.example.com", "/old/x/y?q=1", 301, "http://new.example.com:8443/new/x/y?q=1"},
		{"old.example.com", "/old", 301, "http://new.example.com:8443/new"},
		{"old.example.com", "/old/", 301, "http://new.example.com:8443/new/"},
		{"old.example.com", "/strip/x", 302, "http://old.example.com:" + port + "/x"},
		{"old.example.com", "/strip", 302, "http://old.example.com:" + port + "/"},
		{"old.example.com", "/full", 302, "http://old.example.com/elsewhere"},
		{"old.example.com", "/full/x", 404, ""},
		// No scheme: the listener's port is kept.
		{"port.example.com", "/p", 302, "http://www.example.com:" + port + "/p"},
	}
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tt := range tests {
		req, _ := http.NewRequest("GET", baseURL(s, "web")+tt.path, nil)
		req.Host = tt.host
		req.Header.Set("User-Agent", "Mozilla/5.0")
		req.Header.Set("Accept", "*/*")
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tt.status || res.Header.Get("Location") != tt.location {
			t.Errorf("%s%s: %d %q, want %d %q", tt.host, tt.path, res.StatusCode, res.Header.Get("Location"), tt.status, tt.location)
		}
	}
}

func TestWeightedBackendGroups(t *testing.T) {
	_, a := startBackend(t, "a")
	_, b := startBackend(t, "b")
	_, c := startBackend(t, "c")
	s, _ := startWAF(t, `
listeners:
  - name: web
    address: 127.0.0.1:0
routes:
  - name: split
    hosts: [split.test]
    backendGroups:
      - {weight: 3, backends: ["$A"]}
      - {weight: 1, backends: ["$B"]}
      - {weight: 0, backends: ["$C"]}
  - name: half-invalid
    hosts: [half.test]
    backendGroups:
      - {weight: 1, backends: ["$A"]}
      - {weight: 1, emptyStatus: 500}
  - name: no-endpoints
    hosts: [empty.test]
    backendGroups: [{weight: 1}]
  - name: all-zero
    hosts: [zero.test]
    backendGroups: [{weight: 0, backends: ["$A"]}]
policies:
  - name: default
`, map[string]string{"A": a, "B": b, "C": c})
	count := func(host string, n int) map[string]int {
		out := map[string]int{}
		for i := 0; i < n; i++ {
			res, body := get(t, baseURL(s, "web")+"/", "Host", host, "User-Agent", "Mozilla/5.0", "Accept", "*/*")
			if res.StatusCode != 200 {
				out[fmt.Sprint(res.StatusCode)]++
				continue
			}
			var e echo
			json.Unmarshal([]byte(body), &e)
			out[e.Backend]++
		}
		return out
	}
	// Smooth weighted round robin: exactly 3:1 over every 4 requests.
	if got := count("split.test", 40); got["a"] != 30 || got["b"] != 10 || len(got) != 2 {
		t.Errorf("3:1:0 over 40 requests: %v", got)
	}
	if got := count("half.test", 40); got["a"] != 20 || got["500"] != 20 || len(got) != 2 {
		t.Errorf("one invalid group of two: %v", got)
	}
	if got := count("empty.test", 3); got["503"] != 3 {
		t.Errorf("no endpoints: %v", got)
	}
	if got := count("zero.test", 3); got["500"] != 3 {
		t.Errorf("every weight 0: %v", got)
	}
}

func TestRouteConfigErrors(t *testing.T) {
	base := `listeners:
  - name: web
    address: 127.0.0.1:8080
routes:
  - name: app
    hosts: [a.test]
%s
policies:
  - name: default
`
	tests := []struct{ name, route, want string }{
		{"prefix and exact", "    pathPrefix: /a\n    pathExact: /a\n    backends: [\"h:1\"]", "routes[0].pathExact: a route has pathPrefix or pathExact, not both"},
		{"bad header name", "    headers: [{name: \"a b\", value: x}]\n    backends: [\"h:1\"]", `routes[0].headers[0].name: "a b" is not a header name`},
		{"bad regexp", "    headers: [{name: a, value: \"(\", type: RegularExpression}]\n    backends: [\"h:1\"]", `routes[0].headers[0].value: "(" is not a regular expression`},
		{"bad match type", "    queryParams: [{name: a, value: x, type: Prefix}]\n    backends: [\"h:1\"]", `routes[0].queryParams[0].type: type must be Exact or RegularExpression, not "Prefix"`},
		{"redirect and backends", "    redirect: {scheme: https}\n    backends: [\"h:1\"]", "routes[0].redirect: a route has a redirect or backends, not both"},
		{"redirect status", "    redirect: {statusCode: 304}", "routes[0].redirect.statusCode: statusCode must be 301, 302, 303, 307 or 308, not 304"},
		{"prefix replace on exact", "    pathExact: /a\n    redirect: {path: {type: ReplacePrefixMatch, value: /b}}", "ReplacePrefixMatch needs a route with pathPrefix"},
		{"header value CRLF", "    requestHeaders: {set: [{name: a, value: \"x\\r\\ny: z\"}]}\n    backends: [\"h:1\"]", "routes[0].requestHeaders.set[0].value: a header value cannot contain CR, LF or NUL"},
		{"weight", "    backendGroups: [{weight: -1, backends: [\"h:1\"]}]", "routes[0].backendGroups[0].weight: weight must be 0 to 1000000, not -1"},
		{"group backend", "    backendGroups: [{backends: [\"h\"]}]", `routes[0].backendGroups[0].backends[0]: "h" is not host:port`},
		{"nothing to do", "    pathPrefix: /x", "routes[0].backends: a route needs at least one backend (host:port), backendGroups or a redirect"},
		{"wildcard mode", "    wildcardMatch: Regex\n    backends: [\"h:1\"]", `routes[0].wildcardMatch: wildcardMatch must be Suffix or SingleLabel, not "Regex"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("test.yaml", []byte(fmt.Sprintf(base, tt.route)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "test.yaml:") {
				t.Errorf("no position: %v", err)
			}
		})
	}
	// Routes that differ only in their matches can coexist; equal ones not.
	two := func(a, b string) string {
		return fmt.Sprintf(base, "    pathPrefix: /x\n"+a+"    backends: [\"h:1\"]\n  - name: app2\n    hosts: [a.test]\n    pathPrefix: /x\n"+b+"    backends: [\"h:2\"]")
	}
	if _, err := ParseConfig("t.yaml", []byte(two("    method: GET\n", ""))); err != nil {
		t.Errorf("a method match and none: %v", err)
	}
	if _, err := ParseConfig("t.yaml", []byte(two("    headers: [{name: a, value: b}]\n", "    headers: [{name: A, value: b}]\n"))); err == nil || !strings.Contains(err.Error(), `route "app2" can never match`) {
		t.Errorf("equal header matches: %v", err)
	}
}

// TestKubernetesMerge merges a controller's document into a file: routes,
// a policy of its own, and a certificate (PEM) chosen by SNI over the
// file's certificate that only holds the name; errors name the
// kubernetes.* field; the file alone comes back with Static.
func TestKubernetesMerge(t *testing.T) {
	dir := t.TempDir()
	writeTestCert(t, dir, "static", "shop.example.com")
	_, addrFile := startBackend(t, "file")
	_, addrK8s := startBackend(t, "k8s")
	cfg := mustConfig(t, `
listeners:
  - name: web
    address: 127.0.0.1:0
  - name: websecure
    address: 127.0.0.1:0
    tls:
      certificates:
        - {certFile: $DIR/static.crt, keyFile: $DIR/static.key}
routes:
  - name: file-route
    hosts: [file.example.com]
    backends: ["$FILE"]
policies:
  - name: default
    mode: Prevention
`, map[string]string{"DIR": dir, "FILE": addrFile})
	s, err := NewServer(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(t.Context())

	certPEM, keyPEM := testCertPEM(t, "shop.example.com", "k8s")
	k := &Kubernetes{
		Routes: []WireRoute{{Name: "ingress/shop/web/0/0", Hosts: []string{"shop.example.com"}, Backends: []string{addrK8s}, Policy: "wafpolicy/shop/strict"}},
		Policies: []WirePolicy{{Name: "wafpolicy/shop/strict", Mode: "Prevention", ParanoiaLevel: 2,
			CustomRules: `SecRule ARGS:debug "@streq 1" "id:10001,phase:1,deny,status:403,log"`}},
		Certificates: []WireListenerCertificate{{Listeners: []string{"websecure"}, CertPEM: certPEM, KeyPEM: keyPEM, ServerNames: []string{"shop.example.com"}}},
	}
	merged, err := cfg.WithKubernetes(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(merged); err != nil {
		t.Fatal(err)
	}
	_, body := get(t, baseURL(s, "web")+"/", "Host", "shop.example.com", "User-Agent", "Mozilla/5.0", "Accept", "*/*")
	if !strings.Contains(body, `"backend":"k8s"`) {
		t.Errorf("Kubernetes route: %s", body)
	}
	if res, _ := get(t, baseURL(s, "web")+"/?debug=1", "Host", "shop.example.com", "User-Agent", "Mozilla/5.0", "Accept", "*/*"); res.StatusCode != 403 {
		t.Errorf("the Kubernetes policy's custom rule: %d", res.StatusCode)
	}
	if _, body := get(t, baseURL(s, "web")+"/", "Host", "file.example.com", "User-Agent", "Mozilla/5.0", "Accept", "*/*"); !strings.Contains(body, `"backend":"file"`) {
		t.Errorf("file route: %s", body)
	}
	if got := servedCertCN(t, s.Addr("websecure").String(), "shop.example.com"); got != "k8s" {
		t.Errorf("SNI shop.example.com: certificate %q, want the Kubernetes one", got)
	}

	// A second push with the same policy compiles nothing.
	k.Routes[0].Backends = []string{addrFile}
	start := time.Now()
	again, err := cfg.WithKubernetes(k)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("merging with an unchanged policy took %s (recompiled?)", d)
	}
	if again.Policies[1].waf != merged.Policies[1].waf {
		t.Error("the unchanged policy was compiled again")
	}

	bad := &Kubernetes{
		Routes:       []WireRoute{{Name: "ingress/x", Backends: []string{"nohost"}, Listeners: []string{"nope"}}, {Name: "file-route", Backends: []string{"h:1"}}},
		Certificates: []WireListenerCertificate{{Listeners: []string{"web"}, CertPEM: "junk", KeyPEM: "junk"}},
	}
	_, err = cfg.WithKubernetes(bad)
	for _, want := range []string{`kubernetes.routes[0].backends[0]: "nohost" is not host:port`, `kubernetes.routes[0].listeners[0]: no listener named "nope"`,
		`kubernetes.routes[1].name: duplicate route name "file-route"`, "kubernetes.certificates[0]: cannot load the certificate"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v\nwant %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "test.yaml:") {
		t.Errorf("a Kubernetes error placed in the file: %v", err)
	}
	static, err := merged.Static()
	if err != nil || len(static.Routes) != 1 || static.Kubernetes != nil {
		t.Fatalf("Static: %v %+v", err, static)
	}
}

// servedCertCN connects with SNI name and returns the served
// certificate's common name.
func servedCertCN(t testing.TB, addr, name string) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}
