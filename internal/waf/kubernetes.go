package waf

import (
	"crypto/sha256"
	"slices"
	"sync"

	"github.com/corazawaf/coraza/v3"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// Kubernetes is the part of the WAF configuration the Kubernetes controller
// derives from Ingress and Gateway API objects (docs/kubernetes.md,
// "Ingress and Gateway API"): routes, WAF policies and certificates. It is
// merged after the file's own (Config.WithKubernetes); the daemon receives
// it on PUT /v1/waf/kubernetes (docs/api.md). Its routes and certificates
// name the file's listeners; its routes may name the file's policies or
// its own.
type Kubernetes struct {
	Routes       []WireRoute               `yaml:"routes,omitempty"`
	Policies     []WirePolicy              `yaml:"policies,omitempty"`
	Certificates []WireListenerCertificate `yaml:"certificates,omitempty"`
}

// WireListenerCertificate is a certificate for some HTTPS listeners (all of
// them when Listeners is empty). The file's certificates come first: the
// first of a listener stays its default; for an SNI name, a certificate
// that lists it in serverNames wins over one that only holds it.
type WireListenerCertificate struct {
	Listeners   []string `yaml:"listeners,omitempty"`
	CertPEM     string   `yaml:"certPEM"`
	KeyPEM      string   `yaml:"keyPEM"`
	ServerNames []string `yaml:"serverNames,omitempty"`
}

// ParseKubernetes decodes a Kubernetes document (YAML or JSON) strictly:
// unknown fields are errors with their position in data.
func ParseKubernetes(name string, data []byte) (*Kubernetes, error) {
	var k Kubernetes
	if err := policy.DecodeStrict(name, data, &k); err != nil {
		return nil, err
	}
	return &k, nil
}

// WithKubernetes returns c (a configuration from ParseConfig) with k merged
// in, validated as a whole: k's errors name their field
// (kubernetes.routes[2].backends[0]). The file's policies keep their
// compiled rules; k's are compiled, or taken from the cache of compiled
// policies when one with the same SecLang was compiled before. c is not
// changed. A nil k gives the file alone.
func (c *Config) WithKubernetes(k *Kubernetes) (*Config, error) {
	if c.wire == nil {
		return nil, &policy.Error{Msg: "waf: the configuration was not read from a file"}
	}
	var none Kubernetes
	if k == nil {
		k = &none
	}
	f := &File{
		Listeners: c.wire.Listeners,
		Routes:    slices.Concat(c.wire.Routes, k.Routes),
		Policies:  slices.Concat(c.wire.Policies, k.Policies),
	}
	paths := fieldPaths{routes: len(c.wire.Routes), policies: len(c.wire.Policies)}
	nc, err := validate(c.File, f, c.pos, c.lines, paths, k.Certificates)
	if err != nil {
		return nil, err
	}
	var errs policy.ErrorList
	for i, p := range nc.Policies {
		if i < len(c.Policies) {
			p.waf = c.Policies[i].waf // the same text, compiled once
			continue
		}
		if err := p.compile(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	nc.wire, nc.pos, nc.lines = c.wire, c.pos, c.lines
	if k != &none {
		nc.Kubernetes = k
	}
	return nc, nil
}

// Static is the configuration of the file alone (without what the
// Kubernetes controller pushed).
func (c *Config) Static() (*Config, error) {
	if c.Kubernetes == nil {
		return c, nil
	}
	return c.WithKubernetes(nil)
}

// compiled caches compiled policies by their SecLang, so that a push of
// the Kubernetes controller recompiles only the policies that changed
// (compiling the CRS takes about 100 ms). It keeps the most recently used
// maxCompiled (a compiled policy holds about 4 MiB).
var compiled = struct {
	sync.Mutex
	m   map[[sha256.Size]byte]*compiledEntry
	use uint64
}{m: map[[sha256.Size]byte]*compiledEntry{}}

type compiledEntry struct {
	waf coraza.WAF
	use uint64
}

const maxCompiled = 16

func cachedWAF(directives string) (coraza.WAF, bool) {
	key := sha256.Sum256([]byte(directives))
	compiled.Lock()
	defer compiled.Unlock()
	e := compiled.m[key]
	if e == nil {
		return nil, false
	}
	compiled.use++
	e.use = compiled.use
	return e.waf, true
}

func storeWAF(directives string, w coraza.WAF) {
	key := sha256.Sum256([]byte(directives))
	compiled.Lock()
	defer compiled.Unlock()
	compiled.use++
	compiled.m[key] = &compiledEntry{waf: w, use: compiled.use}
	for len(compiled.m) > maxCompiled {
		var oldest [sha256.Size]byte
		var min uint64 = ^uint64(0)
		for k, e := range compiled.m {
			if e.use < min {
				oldest, min = k, e.use
			}
		}
		delete(compiled.m, oldest)
	}
}
