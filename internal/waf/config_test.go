package waf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigErrors(t *testing.T) {
	base := func(extra string) string {
		return `listeners:
  - name: web
    address: 127.0.0.1:8080
routes:
  - name: app
    backends: ["10.0.0.5:80"]
policies:
  - name: default
` + extra
	}
	tests := []struct {
		name, config, want string
	}{
		{"unknown field", "listeners:\n  - name: web\n    adress: 1.2.3.4:80\n", `test.yaml:3:5: unknown field "adress"`},
		{"wrong shape", "listeners: web\n", "test.yaml:1:12: listeners: expected a list"},
		{"no listeners", "routes: []\n", "listeners: at least one listener is required"},
		{"bad address", strings.Replace(base(""), "127.0.0.1:8080", "localhost", 1), `test.yaml:3:14: listeners[0].address: "localhost" is not host:port`},
		{"bad backend", strings.Replace(base(""), "10.0.0.5:80", "10.0.0.5", 1), `test.yaml:6:16: routes[0].backends[0]: "10.0.0.5" is not host:port`},
		{"unknown policy", strings.Replace(base(""), `backends: ["10.0.0.5:80"]`, "backends: [\"10.0.0.5:80\"]\n    policy: strict", 1), `test.yaml:7:13: routes[0].policy: no policy named "strict" (defined: default)`},
		{"bad mode", base("    mode: Block\n"), `test.yaml:9:11: policies[0].mode: mode must be Prevention, Detection or Off, not "Block"`},
		{"paranoia", base("    paranoiaLevel: 5\n"), "test.yaml:9:20: policies[0].paranoiaLevel: paranoia level must be 1 to 4, not 5"},
		{"body limit", base("    requestBodyLimit: 12 parsecs\n"), `test.yaml:9:23: policies[0].requestBodyLimit: "12 parsecs" is not a size`},
		{"in-memory above limit", base("    requestBodyLimit: 64KiB\n    requestBodyInMemoryLimit: 1MiB\n"), "policies[0].requestBodyInMemoryLimit: requestBodyInMemoryLimit (1MiB) is larger than requestBodyLimit (64KiB)"},
		{"exclusion without rules", base("    exclusions:\n      - pathPrefix: /x\n"), "test.yaml:10:9: policies[0].exclusions[0]: an exclusion needs ruleIds or tags"},
		{"bad rule id", base("    exclusions:\n      - ruleIds: [94x100]\n"), `test.yaml:10:19: policies[0].exclusions[0].ruleIds[0]: "94x100" is not a rule ID or range`},
		{"backwards range", base("    exclusions:\n      - ruleIds: [942200-942100]\n"), `range "942200-942100" runs backwards`},
		{"bad target", base("    exclusions:\n      - ruleIds: [942100]\n        targets: [\"ARGS:a b\"]\n"), `policies[0].exclusions[0].targets[0]: "ARGS:a b" is not a target`},
		{"duplicate route", strings.Replace(base(""), "policies:", "  - name: app2\n    backends: [\"10.0.0.6:80\"]\npolicies:", 1), `routes[1]: route "app2" can never match: route "app" has the same host "*" and pathPrefix "/"`},
		{"missing cert", strings.Replace(base(""), "address: 127.0.0.1:8080", "address: 127.0.0.1:8443\n    tls:\n      certificates:\n        - certFile: nope.crt\n          keyFile: nope.key", 1), "listeners[0].tls.certificates[0]: cannot load the certificate"},
		{"no policy for listener", "listeners:\n  - name: web\n    address: :80\nroutes:\n  - name: a\n    backends: [\"h:1\"]\n", `listener "web" names no WAF policy and there is no policy named "default"`},
		{"bad duration", strings.Replace(base(""), "address: 127.0.0.1:8080", "address: 127.0.0.1:8080\n    timeouts: {readHeader: soon}", 1), `listeners[0].timeouts.readHeader: "soon" is not a positive duration`},
		{"seclang error", base("    customRules: |\n      SecRule ARGS:a \"@streq b\" \"id:10001,phase:1,deny\"\n      SecRule ARGS \"@nosuchop x\" \"id:10002,phase:1,deny\"\n"), `test.yaml:11:7: policies[0].customRules: line 2 of the custom rules: invalid WAF config from string: failed to compile the directive "secrule": operator nosuchop not found`},
		{"seclang duplicate id with the CRS", base("    customRules: SecAction \"id:949110,phase:1,pass,nolog\"\n"), `policies[0].customRules: Coraza rejected policy "default"`},
		{"seclang continuation", base("    customRules: |\n      # comment\n      SecRule ARGS:a \"@streq b\" \\\n        \"id:10001,phase:1,deny\"\n      SecAction \"id:10002,phase:1,nosuchaction\"\n"), "test.yaml:13:7: policies[0].customRules: line 4 of the custom rules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("test.yaml", []byte(tt.config))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.config)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error\n%v\nwant it to contain\n%s", err, tt.want)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig("test.yaml", []byte(`listeners:
  - name: web
    address: 127.0.0.1:8080
    trustedProxies: [10.0.0.0/8, 192.168.1.1]
routes:
  - name: app
    hosts: [Shop.Example.com.]
    backends: ["10.0.0.5:80"]
policies:
  - name: default
    mode: detection
    requestBodyLimit: 1MiB
`))
	if err != nil {
		t.Fatal(err)
	}
	l, r, p := cfg.Listeners[0], cfg.Routes[0], cfg.Policies[0]
	if l.Policy != p || l.MaxHeaderBytes != DefaultMaxHeaderBytes || l.ReadHeaderTimeout != DefaultReadHeaderTimeout || len(l.TrustedProxies) != 2 {
		t.Errorf("listener defaults: %+v", l)
	}
	if r.PathPrefix != "/" || r.Hosts[0] != "shop.example.com" || r.MaxFails != DefaultMaxFails {
		t.Errorf("route defaults: %+v", r)
	}
	if p.Mode != ModeDetection || p.ParanoiaLevel != 1 || p.InboundAnomalyThreshold != 5 || p.OutboundAnomalyThreshold != 4 || p.RequestBodyLimit != 1<<20 || p.waf == nil {
		t.Errorf("policy defaults: %+v", p)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"131072": 131072, "128KiB": 128 << 10, "12MiB": 12 << 20, "1GiB": 1 << 30, "64KB": 64 << 10, "2M": 2 << 20} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5MiB", "12 parsecs", "99999999999999TiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

// TestExamplesLoad keeps docs/waf.md's and examples/'s WAF configs valid.
func TestExamplesLoad(t *testing.T) {
	files, _ := filepath.Glob("../../examples/waf*.yaml")
	if len(files) == 0 {
		t.Fatal("no examples/waf*.yaml")
	}
	for _, f := range files {
		if _, err := LoadConfig(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	doc, err := os.ReadFile("../../docs/waf.md")
	if err != nil {
		t.Fatal(err)
	}
	// Every ```yaml block of the doc that is a whole config must load.
	n := 0
	for _, block := range strings.Split(string(doc), "```yaml\n")[1:] {
		block = block[:strings.Index(block, "```")]
		if !strings.HasPrefix(block, "listeners:") {
			continue
		}
		n++
		dir := t.TempDir()
		writeTestCert(t, dir, "store", "store.example.com")
		writeTestCert(t, dir, "api", "api.example.com")
		p := filepath.Join(dir, "waf.yaml")
		os.WriteFile(p, []byte(strings.ReplaceAll(block, "/etc/clusterwall/tls/", "")), 0o644)
		if _, err := LoadConfig(p); err != nil {
			t.Errorf("docs/waf.md config %d: %v", n, err)
		}
	}
	if n == 0 {
		t.Error("docs/waf.md has no complete config")
	}
}
