package waf

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/corazawaf/coraza/v3"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// File is the WAF configuration file in its wire (YAML) form. docs/waf.md
// documents every field.
type File struct {
	Listeners []WireListener `yaml:"listeners"`
	Routes    []WireRoute    `yaml:"routes"`
	Policies  []WirePolicy   `yaml:"policies"`
}

// WireListener is one HTTP or HTTPS listener.
type WireListener struct {
	Name           string             `yaml:"name"`
	Address        string             `yaml:"address"`
	TLS            *WireTLS           `yaml:"tls"`
	Policy         string             `yaml:"policy"`
	TrustedProxies []string           `yaml:"trustedProxies"`
	Limits         WireLimits         `yaml:"limits"`
	Timeouts       WireServerTimeouts `yaml:"timeouts"`
}

// WireTLS turns a listener into an HTTPS listener.
type WireTLS struct {
	Certificates []WireCertificate `yaml:"certificates"`
	MinVersion   string            `yaml:"minVersion"`
}

// WireCertificate is one certificate and key: PEM files, or the PEM text
// itself (certPEM/keyPEM, as the Kubernetes controller sends them).
// ServerNames are the SNI names it answers; empty means the names in the
// certificate.
type WireCertificate struct {
	CertFile    string   `yaml:"certFile,omitempty"`
	KeyFile     string   `yaml:"keyFile,omitempty"`
	CertPEM     string   `yaml:"certPEM,omitempty"`
	KeyPEM      string   `yaml:"keyPEM,omitempty"`
	ServerNames []string `yaml:"serverNames,omitempty"`
}

// WireLimits bound what one client can make the listener hold.
type WireLimits struct {
	MaxHeaderBytes string `yaml:"maxHeaderBytes"`
	MaxBodyBytes   string `yaml:"maxBodyBytes"`
	MaxConnections int    `yaml:"maxConnections"`
}

// WireServerTimeouts are a listener's client-side timeouts (Go durations).
type WireServerTimeouts struct {
	ReadHeader string `yaml:"readHeader"`
	Read       string `yaml:"read"`
	Write      string `yaml:"write"`
	Idle       string `yaml:"idle"`
}

// WireRoute sends requests for some hosts and a path (prefix or exact
// path), optionally only those with a method, headers or query
// parameters, to backends; or answers them with a redirect.
type WireRoute struct {
	Name      string   `yaml:"name"`
	Listeners []string `yaml:"listeners,omitempty"`
	Hosts     []string `yaml:"hosts,omitempty"`
	// WildcardMatch is how a *.wildcard host matches: Suffix (default: any
	// number of labels, as Gateway API hostnames) or SingleLabel (exactly
	// one label, as Kubernetes Ingress hosts).
	WildcardMatch string           `yaml:"wildcardMatch,omitempty"`
	PathPrefix    string           `yaml:"pathPrefix,omitempty"`
	PathExact     string           `yaml:"pathExact,omitempty"`
	Method        string           `yaml:"method,omitempty"`
	Headers       []WireValueMatch `yaml:"headers,omitempty"`
	QueryParams   []WireValueMatch `yaml:"queryParams,omitempty"`
	// RequestHeaders and ResponseHeaders modify the headers sent to the
	// backend and those returned to the client.
	RequestHeaders  *WireHeaderFilter `yaml:"requestHeaders,omitempty"`
	ResponseHeaders *WireHeaderFilter `yaml:"responseHeaders,omitempty"`
	// Redirect answers matching requests with a redirect instead of
	// proxying them.
	Redirect *WireRedirect `yaml:"redirect,omitempty"`
	Backends []string      `yaml:"backends,omitempty"`
	// BackendGroups share the requests by weight; a group without
	// backends answers its emptyStatus.
	BackendGroups []WireBackendGroup `yaml:"backendGroups,omitempty"`
	Policy        string             `yaml:"policy,omitempty"`
	HealthCheck   *WireHealthCheck   `yaml:"healthCheck,omitempty"`
	PassiveHealth WirePassiveHealth  `yaml:"passiveHealth,omitempty"`
	Timeouts      WireBackendTimeout `yaml:"timeouts,omitempty"`
}

// WireValueMatch matches a request header (case-insensitive name) or query
// parameter (case-sensitive name) by value: Exact (default) or
// RegularExpression (Go RE2 syntax, matched anywhere unless anchored).
type WireValueMatch struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
	Type  string `yaml:"type,omitempty"`
}

// WireHeaderFilter sets (replaces), adds (appends) and removes headers.
type WireHeaderFilter struct {
	Set    []WireHeader `yaml:"set,omitempty"`
	Add    []WireHeader `yaml:"add,omitempty"`
	Remove []string     `yaml:"remove,omitempty"`
}

// WireHeader is one header name and value.
type WireHeader struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

// WireRedirect answers with a redirect to the request's URL with the given
// parts replaced (Gateway API's RequestRedirect filter).
type WireRedirect struct {
	Scheme     string            `yaml:"scheme,omitempty"`   // http or https; default: the request's
	Hostname   string            `yaml:"hostname,omitempty"` // default: the request's host
	Port       int               `yaml:"port,omitempty"`     // default: the scheme's port, or the listener's
	Path       *WirePathModifier `yaml:"path,omitempty"`
	StatusCode int               `yaml:"statusCode,omitempty"` // 301, 302 (default), 303, 307 or 308
}

// WirePathModifier replaces the whole path (ReplaceFullPath) or the part
// the route's pathPrefix matched (ReplacePrefixMatch).
type WirePathModifier struct {
	Type  string `yaml:"type"`
	Value string `yaml:"value"`
}

// WireBackendGroup is one weighted share of a route's requests.
type WireBackendGroup struct {
	Weight   *int     `yaml:"weight,omitempty"` // default 1; 0: no requests
	Backends []string `yaml:"backends,omitempty"`
	// EmptyStatus is the answer when the group has no backends: 503
	// (default: no ready endpoints) or 500 (an invalid reference).
	EmptyStatus int `yaml:"emptyStatus,omitempty"`
}

// WireHealthCheck is an active health check of each backend of a route.
type WireHealthCheck struct {
	Path               string `yaml:"path"`
	Interval           string `yaml:"interval"`
	Timeout            string `yaml:"timeout"`
	HealthyThreshold   int    `yaml:"healthyThreshold"`
	UnhealthyThreshold int    `yaml:"unhealthyThreshold"`
}

// WirePassiveHealth takes a backend out after consecutive proxy failures.
type WirePassiveHealth struct {
	MaxFails    int    `yaml:"maxFails"`
	FailTimeout string `yaml:"failTimeout"`
}

// WireBackendTimeout are a route's backend-side timeouts.
type WireBackendTimeout struct {
	Dial           string `yaml:"dial"`
	ResponseHeader string `yaml:"responseHeader"`
}

// WirePolicy is a named WAF policy.
type WirePolicy struct {
	Name                     string          `yaml:"name"`
	Mode                     string          `yaml:"mode"`
	ParanoiaLevel            int             `yaml:"paranoiaLevel"`
	InboundAnomalyThreshold  int             `yaml:"inboundAnomalyThreshold"`
	OutboundAnomalyThreshold int             `yaml:"outboundAnomalyThreshold"`
	RequestBodyLimit         string          `yaml:"requestBodyLimit"`
	RequestBodyInMemoryLimit string          `yaml:"requestBodyInMemoryLimit"`
	ResponseInspection       bool            `yaml:"responseInspection"`
	ResponseBodyLimit        string          `yaml:"responseBodyLimit"`
	ResponseBodyMimeTypes    []string        `yaml:"responseBodyMimeTypes"`
	Exclusions               []WireExclusion `yaml:"exclusions"`
	CustomRules              string          `yaml:"customRules"`
}

// WireExclusion removes CRS rules, or some targets from them, for all
// requests or for requests under a path prefix.
type WireExclusion struct {
	RuleIDs    []string `yaml:"ruleIds"`
	Tags       []string `yaml:"tags"`
	Targets    []string `yaml:"targets"`
	PathPrefix string   `yaml:"pathPrefix"`
}

// Mode is what a WAF policy does with a request whose anomaly score
// reaches the threshold.
type Mode string

// Modes. Off skips inspection altogether.
const (
	ModePrevention Mode = "Prevention"
	ModeDetection  Mode = "Detection"
	ModeOff        Mode = "Off"
)

// Config is a validated WAF configuration.
type Config struct {
	File      string
	Listeners []*Listener
	Routes    []*Route
	Policies  []*Policy // in file order, then the Kubernetes controller's
	// Kubernetes is what the controller pushed and is merged in (nil:
	// the file alone).
	Kubernetes *Kubernetes

	wire  *File             // the file as decoded, to merge Kubernetes into
	pos   *policy.Positions // positions in the file
	lines []string          // the file's lines (block scalars' indentation)
}

// Listener is a validated listener.
type Listener struct {
	Name              string
	Address           string
	TLS               *TLSConfig // nil: plain HTTP
	Policy            *Policy
	TrustedProxies    []netip.Prefix
	MaxHeaderBytes    int
	MaxBodyBytes      int64
	MaxConnections    int
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
}

// TLSConfig is a listener's certificates.
type TLSConfig struct {
	Certificates []Certificate
	MinVersion   uint16
}

// Certificate is one certificate (file pair or PEM text) and the SNI names
// it serves.
type Certificate struct {
	CertFile, KeyFile string
	CertPEM, KeyPEM   []byte // instead of the files
	ServerNames       []string
	// Kubernetes: pushed by the controller (Kubernetes.Certificates).
	Kubernetes bool
}

// load reads the certificate and its key.
func (c Certificate) load() (tls.Certificate, error) {
	if c.CertPEM != nil {
		return tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	}
	return tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
}

// checkCertificate validates one certificate: files (relative to dir) or
// PEM text, and its server names.
func checkCertificate(at, dir string, wc WireCertificate, bad func(path, format string, args ...any)) (Certificate, bool) {
	cert := Certificate{CertFile: absTo(dir, wc.CertFile), KeyFile: absTo(dir, wc.KeyFile)}
	switch {
	case wc.CertPEM != "" || wc.KeyPEM != "":
		if wc.CertFile != "" || wc.KeyFile != "" {
			bad(at, "a certificate has certFile and keyFile or certPEM and keyPEM, not both")
			return cert, false
		}
		if wc.CertPEM == "" || wc.KeyPEM == "" {
			bad(at, "certPEM and keyPEM are both required")
			return cert, false
		}
		cert.CertPEM, cert.KeyPEM = []byte(wc.CertPEM), []byte(wc.KeyPEM)
	case wc.CertFile == "" || wc.KeyFile == "":
		bad(at, "certFile and keyFile are both required")
		return cert, false
	}
	ok := true
	for k, n := range wc.ServerNames {
		if !validServerName(n) {
			bad(fmt.Sprintf("%s.serverNames[%d]", at, k), "%q is not a DNS name or *.wildcard", n)
			ok = false
		}
		cert.ServerNames = append(cert.ServerNames, strings.ToLower(n))
	}
	if _, err := cert.load(); err != nil {
		bad(at, "cannot load the certificate: %v", err)
		ok = false
	}
	return cert, ok
}

// Route is a validated route.
type Route struct {
	Name       string
	Index      int
	Listeners  []string // empty: every listener
	Hosts      []string // lower case; "*.example.com" wildcards; empty: any host
	PathPrefix string   // "" when PathExact is set
	PathExact  string
	// SingleLabelWildcard: "*.example.com" matches one label only (Ingress).
	SingleLabelWildcard bool
	Method              string
	Headers             []ValueMatch
	QueryParams         []ValueMatch
	RequestHeaders      *HeaderFilter
	ResponseHeaders     *HeaderFilter
	Redirect            *Redirect
	Backends            []string       // host:port: one group of weight 1, or nil with Groups
	Groups              []BackendGroup // weighted; nil for a redirect
	Policy              *Policy        // nil: the listener's policy

	HealthCheck           *HealthCheck
	MaxFails              int
	FailTimeout           time.Duration
	DialTimeout           time.Duration
	ResponseHeaderTimeout time.Duration
}

// HealthCheck is a validated active health check.
type HealthCheck struct {
	Path               string
	Interval, Timeout  time.Duration
	HealthyThreshold   int
	UnhealthyThreshold int
}

// Policy is a validated WAF policy.
type Policy struct {
	Name                     string
	Mode                     Mode
	ParanoiaLevel            int
	InboundAnomalyThreshold  int
	OutboundAnomalyThreshold int
	RequestBodyLimit         int64
	RequestBodyInMemoryLimit int64
	ResponseInspection       bool
	ResponseBodyLimit        int64
	ResponseBodyMimeTypes    []string
	Exclusions               []Exclusion
	CustomRules              string
	// customRulesPos is where the custom rules start in the file, to place
	// SecLang errors.
	customRulesPos policy.Pos
	customRulesKey string // field path
	// customRulesBlock: the custom rules are a YAML block scalar (| or >),
	// whose text starts on the line after customRulesPos.
	customRulesBlock bool
	blockIndent      int // indentation of the block scalar's text

	waf coraza.WAF // compiled by compile; nil in mode Off
}

// Exclusion is a validated rule exclusion.
type Exclusion struct {
	RuleIDs    []string // "942100" or "942100-942199"
	Tags       []string
	Targets    []string
	PathPrefix string
}

// Defaults.
const (
	DefaultMaxHeaderBytes    = 32 << 10
	DefaultMaxBodyBytes      = 16 << 20
	DefaultMaxConnections    = 4096
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 60 * time.Second
	DefaultWriteTimeout      = 120 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultDialTimeout       = 5 * time.Second
	DefaultResponseHeader    = 60 * time.Second
	DefaultRequestBodyLimit  = 13107200 // CRS/Coraza recommended
	DefaultInMemoryBodyLimit = 131072
	DefaultResponseBodyLimit = 524288
	DefaultMaxFails          = 3
	DefaultFailTimeout       = 10 * time.Second
)

// DefaultResponseMimeTypes are inspected when responseInspection is on and
// responseBodyMimeTypes is empty.
var DefaultResponseMimeTypes = []string{"text/plain", "text/html", "text/xml", "application/json"}

// LoadConfig reads, decodes strictly, validates and compiles-checks a WAF
// configuration file. Relative certificate paths are relative to the file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseConfig(path, data)
}

// ParseConfig decodes and validates a configuration. Errors are a
// policy.ErrorList naming FILE:LINE:COL and the field. SecLang custom rules
// are checked by compiling each policy with Coraza.
func ParseConfig(file string, data []byte) (*Config, error) {
	var f File
	pos, err := policy.DecodeStrictPositions(file, data, &f) // the policy's position index
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(data), "\n")
	c, err := validate(file, &f, pos, lines, fieldPaths{routes: len(f.Routes), policies: len(f.Policies)}, nil)
	if err != nil {
		return nil, err
	}
	c.wire, c.pos, c.lines = &f, pos, lines
	// SecLang errors surface only when Coraza compiles the policy. Each
	// policy is compiled once here; the server uses the result.
	var errs policy.ErrorList
	for _, p := range c.Policies {
		if err := p.compile(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// routeNameRe is the wider form route and policy names may take, so that
// the names the Kubernetes controller gives them can say where they come
// from (ingress/shop/store/0/1).
var routeNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]{0,252}$`)

// fieldPaths names the routes and policies of a merged configuration: the
// file's own first (routes[i]), then the Kubernetes controller's
// (kubernetes.routes[i]).
type fieldPaths struct{ routes, policies int }

func (p fieldPaths) route(i int) string {
	if i < p.routes {
		return fmt.Sprintf("routes[%d]", i)
	}
	return fmt.Sprintf("kubernetes.routes[%d]", i-p.routes)
}

func (p fieldPaths) policy(i int) string {
	if i < p.policies {
		return fmt.Sprintf("policies[%d]", i)
	}
	return fmt.Sprintf("kubernetes.policies[%d]", i-p.policies)
}

// validate checks f (the file's listeners, routes and policies, then those
// of the Kubernetes controller, which paths tells apart) and adds the
// controller's certificates to the HTTPS listeners.
func validate(file string, f *File, pos *policy.Positions, lines []string, paths fieldPaths, certs []WireListenerCertificate) (*Config, error) {
	var errs policy.ErrorList
	bad := func(path, format string, args ...any) {
		e := &policy.Error{Path: path, Msg: fmt.Sprintf(format, args...)}
		if strings.HasPrefix(path, "kubernetes.") {
			// Not in the file: the Kubernetes controller's part.
			errs = append(errs, e)
			return
		}
		e.Pos = pos.Lookup(path)
		if e.Pos.Line > 0 {
			// Error() prints the position only: keep the field in the text.
			e.Msg = path + ": " + e.Msg
		}
		errs = append(errs, e)
	}
	dir := filepath.Dir(file)
	c := &Config{File: file}

	// Policies first: listeners and routes refer to them.
	policies := map[string]*Policy{}
	for i, wp := range f.Policies {
		at := paths.policy(i)
		p := &Policy{Name: wp.Name, CustomRules: wp.CustomRules, customRulesKey: at + ".customRules"}
		p.customRulesPos, p.customRulesBlock = pos.Lookup(at+".customRules"), pos.Block(at+".customRules")
		if p.customRulesBlock {
			p.blockIndent = indentOfLine(lines, p.customRulesPos.Line+1)
		}
		switch {
		case wp.Name == "":
			bad(at+".name", "a policy needs a name")
		case !routeNameRe.MatchString(wp.Name):
			bad(at+".name", "%q is not a valid name (letters, digits, '.', '_', '-', '/', ':')", wp.Name)
		case policies[wp.Name] != nil:
			bad(at+".name", "duplicate policy name %q", wp.Name)
		default:
			policies[wp.Name] = p
		}
		switch strings.ToLower(wp.Mode) {
		case "", "prevention":
			p.Mode = ModePrevention
		case "detection", "detectiononly":
			p.Mode = ModeDetection
		case "off":
			p.Mode = ModeOff
		default:
			bad(at+".mode", "mode must be Prevention, Detection or Off, not %q", wp.Mode)
		}
		p.ParanoiaLevel = wp.ParanoiaLevel
		if p.ParanoiaLevel == 0 {
			p.ParanoiaLevel = 1
		} else if p.ParanoiaLevel < 1 || p.ParanoiaLevel > 4 {
			bad(at+".paranoiaLevel", "paranoia level must be 1 to 4, not %d", wp.ParanoiaLevel)
		}
		p.InboundAnomalyThreshold = wp.InboundAnomalyThreshold
		if p.InboundAnomalyThreshold == 0 {
			p.InboundAnomalyThreshold = 5
		} else if p.InboundAnomalyThreshold < 1 || p.InboundAnomalyThreshold > 10000 {
			bad(at+".inboundAnomalyThreshold", "threshold must be 1 to 10000, not %d", wp.InboundAnomalyThreshold)
		}
		p.OutboundAnomalyThreshold = wp.OutboundAnomalyThreshold
		if p.OutboundAnomalyThreshold == 0 {
			p.OutboundAnomalyThreshold = 4
		} else if p.OutboundAnomalyThreshold < 1 || p.OutboundAnomalyThreshold > 10000 {
			bad(at+".outboundAnomalyThreshold", "threshold must be 1 to 10000, not %d", wp.OutboundAnomalyThreshold)
		}
		size := func(field, s string, def, max int64) int64 {
			if s == "" {
				return def
			}
			n, err := ParseSize(s)
			if err != nil {
				bad(at+"."+field, "%v", err)
				return def
			}
			if n < 1 || n > max {
				bad(at+"."+field, "%s must be between 1 byte and %s, not %s", field, FormatSize(max), s)
				return def
			}
			return n
		}
		p.RequestBodyLimit = size("requestBodyLimit", wp.RequestBodyLimit, DefaultRequestBodyLimit, 1<<30)
		p.RequestBodyInMemoryLimit = size("requestBodyInMemoryLimit", wp.RequestBodyInMemoryLimit, min(DefaultInMemoryBodyLimit, p.RequestBodyLimit), 1<<30)
		if p.RequestBodyInMemoryLimit > p.RequestBodyLimit {
			bad(at+".requestBodyInMemoryLimit", "requestBodyInMemoryLimit (%s) is larger than requestBodyLimit (%s)", FormatSize(p.RequestBodyInMemoryLimit), FormatSize(p.RequestBodyLimit))
		}
		p.ResponseInspection = wp.ResponseInspection
		p.ResponseBodyLimit = size("responseBodyLimit", wp.ResponseBodyLimit, DefaultResponseBodyLimit, 1<<30)
		for j, mt := range wp.ResponseBodyMimeTypes {
			if !mimeRe.MatchString(mt) {
				bad(fmt.Sprintf("%s.responseBodyMimeTypes[%d]", at, j), "%q is not a MIME type like text/html", mt)
			}
		}
		p.ResponseBodyMimeTypes = wp.ResponseBodyMimeTypes
		if len(p.ResponseBodyMimeTypes) == 0 {
			p.ResponseBodyMimeTypes = DefaultResponseMimeTypes
		}
		for j, we := range wp.Exclusions {
			eat := fmt.Sprintf("%s.exclusions[%d]", at, j)
			e := Exclusion{Tags: we.Tags, Targets: we.Targets, PathPrefix: we.PathPrefix}
			if len(we.RuleIDs) == 0 && len(we.Tags) == 0 {
				bad(eat, "an exclusion needs ruleIds or tags")
			}
			for k, id := range we.RuleIDs {
				if err := checkRuleIDRange(id); err != nil {
					bad(fmt.Sprintf("%s.ruleIds[%d]", eat, k), "%v", err)
				}
				e.RuleIDs = append(e.RuleIDs, strings.TrimSpace(id))
			}
			for k, tag := range we.Tags {
				if tag == "" || strings.ContainsAny(tag, "\"',; \t\n\\") {
					bad(fmt.Sprintf("%s.tags[%d]", eat, k), "%q is not a rule tag (no spaces, quotes, commas or semicolons)", tag)
				}
			}
			for k, t := range we.Targets {
				if err := checkTarget(t); err != nil {
					bad(fmt.Sprintf("%s.targets[%d]", eat, k), "%v", err)
				}
			}
			if len(we.Targets) > 0 && we.PathPrefix == "" {
				for k, id := range we.RuleIDs {
					if strings.Contains(id, "-") {
						bad(fmt.Sprintf("%s.ruleIds[%d]", eat, k), "a rule ID range cannot be combined with targets; list the IDs")
					}
				}
			}
			if we.PathPrefix != "" && !strings.HasPrefix(we.PathPrefix, "/") {
				bad(eat+".pathPrefix", "pathPrefix must start with /, not %q", we.PathPrefix)
			} else if strings.ContainsAny(we.PathPrefix, "\"' \t\r\n\\") {
				bad(eat+".pathPrefix", "pathPrefix %q contains quotes or spaces", we.PathPrefix)
			}
			p.Exclusions = append(p.Exclusions, e)
		}
		c.Policies = append(c.Policies, p)
	}
	lookupPolicy := func(path, name string) *Policy {
		if name == "" {
			return nil
		}
		p := policies[name]
		if p == nil {
			var names []string
			for n := range policies {
				names = append(names, n)
			}
			sort.Strings(names)
			if len(names) == 0 {
				bad(path, "no policy named %q: the file defines no policies", name)
			} else {
				bad(path, "no policy named %q (defined: %s)", name, strings.Join(names, ", "))
			}
		}
		return p
	}

	if len(f.Listeners) == 0 {
		bad("listeners", "at least one listener is required")
	}
	listeners := map[string]*Listener{}
	addrs := map[string]string{}
	for i, wl := range f.Listeners {
		at := fmt.Sprintf("listeners[%d]", i)
		l := &Listener{Name: wl.Name, Address: wl.Address}
		switch {
		case wl.Name == "":
			bad(at+".name", "a listener needs a name")
		case !nameRe.MatchString(wl.Name):
			bad(at+".name", "%q is not a valid name (letters, digits, '.', '_', '-')", wl.Name)
		case listeners[wl.Name] != nil:
			bad(at+".name", "duplicate listener name %q", wl.Name)
		default:
			listeners[wl.Name] = l
		}
		if _, port, err := net.SplitHostPort(wl.Address); err != nil {
			bad(at+".address", "%q is not host:port (e.g. 0.0.0.0:443)", wl.Address)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			bad(at+".address", "%q has an invalid port", wl.Address)
		} else if other, dup := addrs[wl.Address]; dup && n != 0 {
			bad(at+".address", "address %s is already used by listener %q", wl.Address, other)
		} else {
			addrs[wl.Address] = wl.Name
		}
		if wl.TLS != nil {
			t := &TLSConfig{MinVersion: tls.VersionTLS12}
			switch wl.TLS.MinVersion {
			case "", "1.2":
			case "1.3":
				t.MinVersion = tls.VersionTLS13
			default:
				bad(at+".tls.minVersion", "minVersion must be 1.2 or 1.3, not %q", wl.TLS.MinVersion)
			}
			if len(wl.TLS.Certificates) == 0 {
				bad(at+".tls.certificates", "an HTTPS listener needs at least one certificate")
			}
			for j, wc := range wl.TLS.Certificates {
				cat := fmt.Sprintf("%s.tls.certificates[%d]", at, j)
				if cert, ok := checkCertificate(cat, dir, wc, bad); ok {
					t.Certificates = append(t.Certificates, cert)
				}
			}
			l.TLS = t
		}
		if wl.Policy != "" {
			l.Policy = lookupPolicy(at+".policy", wl.Policy)
		} else if p := policies["default"]; p != nil {
			l.Policy = p
		} else {
			bad(at+".policy", "listener %q names no WAF policy and there is no policy named \"default\" (set policy: NAME, or a policy with mode: Off to proxy uninspected)", wl.Name)
		}
		for j, s := range wl.TrustedProxies {
			pfx, err := parsePrefixOrAddr(s)
			if err != nil {
				bad(fmt.Sprintf("%s.trustedProxies[%d]", at, j), "%q is not an IP address or CIDR prefix", s)
				continue
			}
			l.TrustedProxies = append(l.TrustedProxies, pfx)
		}
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
		if s := wl.Limits.MaxHeaderBytes; s != "" {
			n, err := ParseSize(s)
			switch {
			case err != nil:
				bad(at+".limits.maxHeaderBytes", "%v", err)
			case n < 1024 || n > 1<<20:
				bad(at+".limits.maxHeaderBytes", "maxHeaderBytes must be between 1KiB and 1MiB, not %s", s)
			default:
				l.MaxHeaderBytes = int(n)
			}
		}
		l.MaxBodyBytes = DefaultMaxBodyBytes
		if s := wl.Limits.MaxBodyBytes; s != "" {
			n, err := ParseSize(s)
			switch {
			case err != nil:
				bad(at+".limits.maxBodyBytes", "%v", err)
			case n < 1:
				bad(at+".limits.maxBodyBytes", "maxBodyBytes must be positive")
			default:
				l.MaxBodyBytes = n
			}
		}
		l.MaxConnections = wl.Limits.MaxConnections
		if l.MaxConnections == 0 {
			l.MaxConnections = DefaultMaxConnections
		} else if l.MaxConnections < 1 || l.MaxConnections > 1000000 {
			bad(at+".limits.maxConnections", "maxConnections must be 1 to 1000000, not %d", l.MaxConnections)
		}
		dur := func(field, s string, def time.Duration) time.Duration {
			if s == "" {
				return def
			}
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				bad(at+"."+field, "%q is not a positive duration like 30s or 2m", s)
				return def
			}
			return d
		}
		l.ReadHeaderTimeout = dur("timeouts.readHeader", wl.Timeouts.ReadHeader, DefaultReadHeaderTimeout)
		l.ReadTimeout = dur("timeouts.read", wl.Timeouts.Read, DefaultReadTimeout)
		l.WriteTimeout = dur("timeouts.write", wl.Timeouts.Write, DefaultWriteTimeout)
		l.IdleTimeout = dur("timeouts.idle", wl.Timeouts.Idle, DefaultIdleTimeout)
		if l.ReadHeaderTimeout > l.ReadTimeout {
			bad(at+".timeouts.readHeader", "readHeader (%s) is longer than read (%s)", l.ReadHeaderTimeout, l.ReadTimeout)
		}
		c.Listeners = append(c.Listeners, l)
	}

	for i, lc := range certs {
		cat := fmt.Sprintf("kubernetes.certificates[%d]", i)
		cert, ok := checkCertificate(cat, dir, WireCertificate{CertPEM: lc.CertPEM, KeyPEM: lc.KeyPEM, ServerNames: lc.ServerNames}, bad)
		if !ok {
			continue
		}
		cert.Kubernetes = true
		for j, ln := range lc.Listeners {
			if l := listeners[ln]; l == nil {
				bad(fmt.Sprintf("%s.listeners[%d]", cat, j), "no listener named %q", ln)
			} else if l.TLS == nil {
				bad(fmt.Sprintf("%s.listeners[%d]", cat, j), "listener %q is not an HTTPS listener", ln)
			}
		}
		for _, l := range c.Listeners {
			if l.TLS != nil && (len(lc.Listeners) == 0 || slices.Contains(lc.Listeners, l.Name)) {
				l.TLS.Certificates = append(l.TLS.Certificates, cert)
			}
		}
	}

	routeNames := map[string]bool{}
	seen := map[RouteKey]string{}
	var listenerNames []string
	for _, l := range c.Listeners {
		listenerNames = append(listenerNames, l.Name)
	}
	for i, wr := range f.Routes {
		at := paths.route(i)
		r := &Route{Name: wr.Name, Index: i, PathPrefix: wr.PathPrefix, Listeners: wr.Listeners}
		switch {
		case wr.Name == "":
			bad(at+".name", "a route needs a name")
		case !routeNameRe.MatchString(wr.Name):
			bad(at+".name", "%q is not a valid name (letters, digits, '.', '_', '-', '/', ':')", wr.Name)
		case routeNames[wr.Name]:
			bad(at+".name", "duplicate route name %q", wr.Name)
		default:
			routeNames[wr.Name] = true
		}
		for j, ln := range wr.Listeners {
			if listeners[ln] == nil {
				bad(fmt.Sprintf("%s.listeners[%d]", at, j), "no listener named %q", ln)
			}
		}
		for j, h := range wr.Hosts {
			h = strings.ToLower(strings.TrimSuffix(h, "."))
			if !validServerName(h) {
				bad(fmt.Sprintf("%s.hosts[%d]", at, j), "%q is not a host name or *.wildcard", wr.Hosts[j])
				continue
			}
			r.Hosts = append(r.Hosts, h)
		}
		if r.PathPrefix == "" {
			r.PathPrefix = "/"
		} else if !strings.HasPrefix(r.PathPrefix, "/") {
			bad(at+".pathPrefix", "pathPrefix must start with /, not %q", wr.PathPrefix)
		}
		if len(wr.Backends) == 0 && len(wr.BackendGroups) == 0 && wr.Redirect == nil {
			bad(at+".backends", "a route needs at least one backend (host:port), backendGroups or a redirect")
		}
		for j, b := range wr.Backends {
			if !validBackend(b) {
				bad(fmt.Sprintf("%s.backends[%d]", at, j), "%q is not host:port (e.g. 10.0.0.5:8080)", b)
				continue
			}
			r.Backends = append(r.Backends, b)
		}
		routeExtras(at, &wr, r, bad)
		if len(r.Backends) > 0 {
			r.Groups = []BackendGroup{{Weight: 1, Backends: r.Backends, EmptyStatus: http.StatusServiceUnavailable}}
		}
		r.Policy = lookupPolicy(at+".policy", wr.Policy)
		dur := func(field, s string, def time.Duration) time.Duration {
			if s == "" {
				return def
			}
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				bad(at+"."+field, "%q is not a positive duration like 5s", s)
				return def
			}
			return d
		}
		r.DialTimeout = dur("timeouts.dial", wr.Timeouts.Dial, DefaultDialTimeout)
		r.ResponseHeaderTimeout = dur("timeouts.responseHeader", wr.Timeouts.ResponseHeader, DefaultResponseHeader)
		r.MaxFails = wr.PassiveHealth.MaxFails
		if r.MaxFails == 0 {
			r.MaxFails = DefaultMaxFails
		} else if r.MaxFails < 0 {
			bad(at+".passiveHealth.maxFails", "maxFails must be positive")
		}
		r.FailTimeout = dur("passiveHealth.failTimeout", wr.PassiveHealth.FailTimeout, DefaultFailTimeout)
		if hc := wr.HealthCheck; hc != nil {
			h := &HealthCheck{Path: hc.Path, HealthyThreshold: hc.HealthyThreshold, UnhealthyThreshold: hc.UnhealthyThreshold}
			if h.Path == "" {
				h.Path = "/"
			} else if !strings.HasPrefix(h.Path, "/") || strings.ContainsAny(h.Path, " \t\r\n") {
				bad(at+".healthCheck.path", "path must start with / and contain no spaces, not %q", hc.Path)
			}
			h.Interval = dur("healthCheck.interval", hc.Interval, 10*time.Second)
			h.Timeout = dur("healthCheck.timeout", hc.Timeout, 2*time.Second)
			if h.Timeout > h.Interval {
				bad(at+".healthCheck.timeout", "timeout (%s) is longer than interval (%s)", h.Timeout, h.Interval)
			}
			if h.HealthyThreshold == 0 {
				h.HealthyThreshold = 2
			}
			if h.UnhealthyThreshold == 0 {
				h.UnhealthyThreshold = 3
			}
			if h.HealthyThreshold < 1 || h.HealthyThreshold > 100 {
				bad(at+".healthCheck.healthyThreshold", "must be 1 to 100")
			}
			if h.UnhealthyThreshold < 1 || h.UnhealthyThreshold > 100 {
				bad(at+".healthCheck.unhealthyThreshold", "must be 1 to 100")
			}
			r.HealthCheck = h
		}
		// Two routes with the same listener, host and match: the second
		// could never be chosen.
		for _, k := range r.conflictKeys(listenerNames) {
			if other, dup := seen[k]; dup {
				bad(at, "route %q can never match: route %q has the same host %q and %s", wr.Name, other, k.Host, r.describePath())
			} else {
				seen[k] = wr.Name
			}
		}
		c.Routes = append(c.Routes, r)
	}
	if len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool {
			a, b := errs[i].Pos, errs[j].Pos
			if a.Line != b.Line {
				return a.Line < b.Line
			}
			return a.Column < b.Column
		})
		return nil, errs
	}
	return c, nil
}

var mimeRe = regexp.MustCompile(`^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$`)

var ruleIDRe = regexp.MustCompile(`^([1-9][0-9]{0,9})(?:-([1-9][0-9]{0,9}))?$`)

func checkRuleIDRange(s string) error {
	m := ruleIDRe.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return fmt.Errorf("%q is not a rule ID or range like 942100 or 942100-942199", s)
	}
	if m[2] != "" {
		lo, _ := strconv.Atoi(m[1])
		hi, _ := strconv.Atoi(m[2])
		if lo > hi {
			return fmt.Errorf("range %q runs backwards", s)
		}
	}
	return nil
}

// targetRe accepts a SecLang variable with an optional key or /regex/ key,
// e.g. ARGS:password, REQUEST_COOKIES:/^sess_/, REQUEST_HEADERS:User-Agent.
var targetRe = regexp.MustCompile(`^[A-Z][A-Z_]*(?::(?:[^\s"',;|/][^\s"',;|]*|/[^"',;]+/))?$`)

func checkTarget(s string) error {
	if !targetRe.MatchString(s) {
		return fmt.Errorf("%q is not a target like ARGS:password, REQUEST_COOKIES:/^sess_/ or REQUEST_HEADERS:User-Agent", s)
	}
	return nil
}

var serverNameRe = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

func validServerName(s string) bool {
	s = strings.ToLower(s)
	if len(s) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	return serverNameRe.MatchString(s)
}

func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func absTo(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

var sizeRe = regexp.MustCompile(`^([0-9]+)\s*([KMG]i?B?|B)?$`)

// ParseSize reads a byte size: 131072, 128KiB, 12MiB, 1GiB, 64KB (KB, MB,
// GB are taken as powers of 1024 too, as nginx and ModSecurity users expect).
func ParseSize(s string) (int64, error) {
	m := sizeRe.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%q is not a size like 131072, 128KiB or 12MiB", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || n > 1<<40 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	switch strings.ToUpper(m[2][:min(1, len(m[2]))]) {
	case "K":
		n <<= 10
	case "M":
		n <<= 20
	case "G":
		n <<= 30
	}
	return n, nil
}

// FormatSize prints a size the way ParseSize reads it.
func FormatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return strconv.FormatInt(n, 10)
}

// indentOfLine is the indentation of the 1-based line n of lines.
func indentOfLine(lines []string, n int) int {
	if n < 1 || n > len(lines) {
		return 0
	}
	l := lines[n-1]
	return len(l) - len(strings.TrimLeft(l, " "))
}
