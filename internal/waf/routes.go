package waf

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// The parts of a route beyond host and path prefix: the matches, filters
// and weighted backends of Gateway API HTTPRoutes (and what Kubernetes
// Ingress needs: exact paths, single-label wildcards, HTTP→HTTPS
// redirects). docs/waf.md, "Routes", documents them.

// ValueMatch is a validated header or query parameter match.
type ValueMatch struct {
	Name  string         // header names canonical (textproto), query names as given
	Value string         // Exact
	Regex *regexp.Regexp // RegularExpression (Value holds its source)
}

func (m ValueMatch) matches(v string) bool {
	if m.Regex != nil {
		return m.Regex.MatchString(v)
	}
	return v == m.Value
}

// HeaderFilter is a validated header modifier.
type HeaderFilter struct {
	Set    []WireHeader // canonical names
	Add    []WireHeader
	Remove []string
}

func (f *HeaderFilter) apply(h http.Header) {
	if f == nil {
		return
	}
	for _, x := range f.Set {
		h.Set(x.Name, x.Value)
	}
	for _, x := range f.Add {
		h.Add(x.Name, x.Value)
	}
	for _, n := range f.Remove {
		h.Del(n)
	}
}

// Redirect is a validated redirect.
type Redirect struct {
	Scheme     string // "" keeps the request's
	Hostname   string // "" keeps the request's
	Port       int    // 0: derived (see location)
	PathType   string // "", ReplaceFullPath or ReplacePrefixMatch
	PathValue  string
	StatusCode int
}

// BackendGroup is one weighted share of a route's backends.
type BackendGroup struct {
	Weight      int
	Backends    []string
	EmptyStatus int // the answer when Backends is empty
}

// Path modifier types (Gateway API HTTPPathModifier).
const (
	PathReplaceFull   = "ReplaceFullPath"
	PathReplacePrefix = "ReplacePrefixMatch"
)

// headerNameRe is an RFC 9110 field name (token).
var headerNameRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// methodRe is an RFC 9110 method (token), upper case by convention.
var methodRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$")

// routeExtras validates the matches, filters and backend groups of wr into
// r; bad reports an error at a field path below at.
func routeExtras(at string, wr *WireRoute, r *Route, bad func(path, format string, args ...any)) {
	switch wr.WildcardMatch {
	case "", "Suffix":
	case "SingleLabel":
		r.SingleLabelWildcard = true
	default:
		bad(at+".wildcardMatch", "wildcardMatch must be Suffix or SingleLabel, not %q", wr.WildcardMatch)
	}
	if wr.PathExact != "" {
		if wr.PathPrefix != "" {
			bad(at+".pathExact", "a route has pathPrefix or pathExact, not both")
		}
		if !strings.HasPrefix(wr.PathExact, "/") {
			bad(at+".pathExact", "pathExact must start with /, not %q", wr.PathExact)
		}
		r.PathExact, r.PathPrefix = wr.PathExact, ""
	}
	if wr.Method != "" {
		if !methodRe.MatchString(wr.Method) {
			bad(at+".method", "%q is not an HTTP method", wr.Method)
		}
		r.Method = wr.Method
	}
	valueMatches := func(field string, in []WireValueMatch, header bool) []ValueMatch {
		var out []ValueMatch
		seen := map[string]bool{}
		for i, m := range in {
			mat := fmt.Sprintf("%s.%s[%d]", at, field, i)
			name := m.Name
			if header {
				if !headerNameRe.MatchString(name) {
					bad(mat+".name", "%q is not a header name", m.Name)
					continue
				}
				name = http.CanonicalHeaderKey(name)
			} else if name == "" {
				bad(mat+".name", "a query parameter match needs a name")
				continue
			}
			// As the Gateway API says: of several entries for one name,
			// only the first counts.
			if seen[name] {
				continue
			}
			seen[name] = true
			vm := ValueMatch{Name: name, Value: m.Value}
			switch m.Type {
			case "", "Exact":
			case "RegularExpression":
				re, err := regexp.Compile(m.Value)
				if err != nil {
					bad(mat+".value", "%q is not a regular expression (RE2 syntax): %v", m.Value, err)
					continue
				}
				vm.Regex = re
			default:
				bad(mat+".type", "type must be Exact or RegularExpression, not %q", m.Type)
				continue
			}
			out = append(out, vm)
		}
		return out
	}
	r.Headers = valueMatches("headers", wr.Headers, true)
	r.QueryParams = valueMatches("queryParams", wr.QueryParams, false)
	headerFilter := func(field string, in *WireHeaderFilter) *HeaderFilter {
		if in == nil {
			return nil
		}
		f := &HeaderFilter{}
		check := func(path, name, value string, withValue bool) bool {
			if !headerNameRe.MatchString(name) {
				bad(path+".name", "%q is not a header name", name)
				return false
			}
			if withValue && strings.ContainsAny(value, "\r\n\x00") {
				bad(path+".value", "a header value cannot contain CR, LF or NUL")
				return false
			}
			return true
		}
		for i, h := range in.Set {
			if check(fmt.Sprintf("%s.%s.set[%d]", at, field, i), h.Name, h.Value, true) {
				f.Set = append(f.Set, WireHeader{http.CanonicalHeaderKey(h.Name), h.Value})
			}
		}
		for i, h := range in.Add {
			if check(fmt.Sprintf("%s.%s.add[%d]", at, field, i), h.Name, h.Value, true) {
				f.Add = append(f.Add, WireHeader{http.CanonicalHeaderKey(h.Name), h.Value})
			}
		}
		for i, n := range in.Remove {
			if !headerNameRe.MatchString(n) {
				bad(fmt.Sprintf("%s.%s.remove[%d]", at, field, i), "%q is not a header name", n)
				continue
			}
			f.Remove = append(f.Remove, http.CanonicalHeaderKey(n))
		}
		return f
	}
	r.RequestHeaders = headerFilter("requestHeaders", wr.RequestHeaders)
	r.ResponseHeaders = headerFilter("responseHeaders", wr.ResponseHeaders)

	if rd := wr.Redirect; rd != nil {
		x := &Redirect{Scheme: rd.Scheme, Hostname: strings.ToLower(rd.Hostname), Port: rd.Port, StatusCode: rd.StatusCode}
		switch rd.Scheme {
		case "", "http", "https":
		default:
			bad(at+".redirect.scheme", "scheme must be http or https, not %q", rd.Scheme)
		}
		if rd.Hostname != "" && (strings.HasPrefix(rd.Hostname, "*") || !validServerName(rd.Hostname)) {
			bad(at+".redirect.hostname", "%q is not a host name", rd.Hostname)
		}
		if rd.Port < 0 || rd.Port > 65535 {
			bad(at+".redirect.port", "port must be 1 to 65535, not %d", rd.Port)
		}
		switch rd.StatusCode {
		case 0:
			x.StatusCode = http.StatusFound
		case 301, 302, 303, 307, 308:
		default:
			bad(at+".redirect.statusCode", "statusCode must be 301, 302, 303, 307 or 308, not %d", rd.StatusCode)
		}
		if pm := rd.Path; pm != nil {
			x.PathType, x.PathValue = pm.Type, pm.Value
			switch pm.Type {
			case PathReplaceFull:
			case PathReplacePrefix:
				if r.PathExact != "" {
					bad(at+".redirect.path.type", "ReplacePrefixMatch needs a route with pathPrefix, not pathExact")
				}
			default:
				bad(at+".redirect.path.type", "type must be %s or %s, not %q", PathReplaceFull, PathReplacePrefix, pm.Type)
			}
			if (pm.Value != "" || pm.Type == PathReplaceFull) && !strings.HasPrefix(pm.Value, "/") || strings.ContainsAny(pm.Value, "?#\r\n ") {
				bad(at+".redirect.path.value", "the path must start with / and hold no query, fragment or spaces, not %q", pm.Value)
			}
		}
		if len(wr.Backends) > 0 || len(wr.BackendGroups) > 0 {
			bad(at+".redirect", "a route has a redirect or backends, not both")
		}
		r.Redirect = x
	}

	if len(wr.BackendGroups) > 0 && len(wr.Backends) > 0 {
		bad(at+".backendGroups", "a route has backends or backendGroups, not both")
	}
	for i, g := range wr.BackendGroups {
		gat := fmt.Sprintf("%s.backendGroups[%d]", at, i)
		bg := BackendGroup{Weight: 1, EmptyStatus: http.StatusServiceUnavailable}
		if g.Weight != nil {
			bg.Weight = *g.Weight
			if bg.Weight < 0 || bg.Weight > 1000000 {
				bad(gat+".weight", "weight must be 0 to 1000000, not %d", bg.Weight)
			}
		}
		switch g.EmptyStatus {
		case 0:
		case 500, 502, 503, 504:
			bg.EmptyStatus = g.EmptyStatus
		default:
			bad(gat+".emptyStatus", "emptyStatus must be 500, 502, 503 or 504, not %d", g.EmptyStatus)
		}
		for j, b := range g.Backends {
			if !validBackend(b) {
				bad(fmt.Sprintf("%s.backends[%d]", gat, j), "%q is not host:port (e.g. 10.0.0.5:8080)", b)
				continue
			}
			bg.Backends = append(bg.Backends, b)
		}
		r.Groups = append(r.Groups, bg)
	}
}

// validBackend checks a backend address: host:port with a port 1-65535.
func validBackend(b string) bool {
	host, port, err := net.SplitHostPort(b)
	n, perr := strconv.Atoi(port)
	return err == nil && host != "" && perr == nil && n >= 1 && n <= 65535
}

// matchKey identifies what a route matches beyond listener and host, for
// the "can never match" check: two routes with equal keys on the same
// listener and host shadow each other.
func (r *Route) matchKey() string {
	var b strings.Builder
	if r.PathExact != "" {
		b.WriteString("exact " + r.PathExact)
	} else {
		b.WriteString("prefix " + strings.TrimSuffix(r.PathPrefix, "/"))
	}
	b.WriteString(" method " + r.Method)
	hs := slices.Clone(r.Headers)
	slices.SortFunc(hs, func(a, b ValueMatch) int { return strings.Compare(a.Name, b.Name) })
	for _, h := range hs {
		fmt.Fprintf(&b, " header %s=%q/%v", h.Name, h.Value, h.Regex != nil)
	}
	qs := slices.Clone(r.QueryParams)
	slices.SortFunc(qs, func(a, b ValueMatch) int { return strings.Compare(a.Name, b.Name) })
	for _, q := range qs {
		fmt.Fprintf(&b, " query %s=%q/%v", q.Name, q.Value, q.Regex != nil)
	}
	return b.String()
}

// RouteKey is what two routes must not share: on one listener, one host
// (a wildcard's mode included) and one match (path, method, headers, query
// parameters), only one of them could ever be chosen.
type RouteKey struct {
	Listener string `json:"listener"`
	Host     string `json:"host"` // "*" any; a single-label wildcard is "*.x (one label)"
	Match    string `json:"match"`
}

// conflictKeys are the route's keys on listeners (all of them when the
// route names none).
func (r *Route) conflictKeys(listeners []string) []RouteKey {
	ls := r.Listeners
	if len(ls) == 0 {
		ls = listeners
	}
	hosts := r.Hosts
	if len(hosts) == 0 {
		hosts = []string{"*"}
	}
	mk := r.matchKey()
	var out []RouteKey
	for _, ln := range ls {
		for _, h := range hosts {
			if r.SingleLabelWildcard && strings.HasPrefix(h, "*.") {
				h += " (one label)"
			}
			out = append(out, RouteKey{ln, h, mk})
		}
	}
	return out
}

// CheckRoute validates one route on its own, as the WAF will when it is
// merged (the Kubernetes controller checks each object's routes with it, so
// that one bad object is reported on itself and left out, not refused with
// everything else): the errors name fields below "route". It returns the
// route's conflict keys on listeners (all of listeners when the route names
// none); a route naming a listener not in listeners is an error.
func CheckRoute(wr WireRoute, listeners []string) ([]RouteKey, error) {
	f := &File{Routes: []WireRoute{wr}}
	for _, l := range listeners {
		f.Listeners = append(f.Listeners, WireListener{Name: l, Address: "127.0.0.1:0", Policy: "check"})
	}
	f.Policies = []WirePolicy{{Name: "check", Mode: "Off"}}
	if wr.Policy != "" && wr.Policy != "check" {
		f.Policies = append(f.Policies, WirePolicy{Name: wr.Policy, Mode: "Off"})
	}
	c, err := validate("", f, nil, nil, fieldPaths{routes: 1, policies: len(f.Policies)}, nil)
	if err != nil {
		var list policy.ErrorList
		if errors.As(err, &list) {
			for _, e := range list {
				e.Path = strings.Replace(e.Path, "routes[0]", "route", 1)
				e.Msg = strings.Replace(e.Msg, "routes[0]", "route", 1)
			}
		}
		return nil, err
	}
	return c.Routes[0].conflictKeys(listeners), nil
}

// FileRouteKeys are the conflict keys of the routes of the file (not those
// of the Kubernetes controller): the controller reports its routes that
// collide with them, instead of sending them.
func (c *Config) FileRouteKeys() map[string][]RouteKey {
	var names []string
	for _, l := range c.Listeners {
		names = append(names, l.Name)
	}
	out := map[string][]RouteKey{}
	n := len(c.Routes)
	if c.wire != nil {
		n = len(c.wire.Routes)
	}
	for _, r := range c.Routes[:n] {
		out[r.Name] = r.conflictKeys(names)
	}
	return out
}

// CheckPolicy validates and compiles one WAF policy (the Kubernetes
// controller checks each WAFPolicy object with it); errors name fields
// below "policy".
func CheckPolicy(wp WirePolicy) error {
	f := &File{Policies: []WirePolicy{wp}, Listeners: []WireListener{{Name: "check", Address: "127.0.0.1:0", Policy: wp.Name}}}
	c, err := validate("", f, nil, nil, fieldPaths{routes: 0, policies: 1}, nil)
	rename := func(err error) error {
		var list policy.ErrorList
		var one *policy.Error
		if errors.As(err, &list) {
			for _, e := range list {
				e.Path = strings.Replace(e.Path, "policies[0]", "policy", 1)
				e.Msg = strings.Replace(e.Msg, "policies[0]", "policy", 1)
			}
		} else if errors.As(err, &one) {
			one.Path = strings.Replace(one.Path, "policies[0]", "policy", 1)
			one.Msg = strings.Replace(one.Msg, "policies[0]", "policy", 1)
		}
		return err
	}
	if err != nil {
		return rename(err)
	}
	if err := c.Policies[0].compile(); err != nil {
		return rename(err)
	}
	return nil
}

// describePath is the route's path match in messages.
func (r *Route) describePath() string {
	if r.PathExact != "" {
		return "pathExact " + strconv.Quote(r.PathExact)
	}
	return "pathPrefix " + strconv.Quote(r.PathPrefix)
}

// location builds a redirect's Location for request u (its path and raw
// query), host (the request's, without port), scheme and port of the
// listener it came in on, and the route's matched prefix.
func (x *Redirect) location(r *http.Request, host, scheme string, listenerPort int, prefix string) string {
	out := &url.URL{Scheme: scheme, RawQuery: r.URL.RawQuery}
	port := listenerPort
	if x.Scheme != "" {
		out.Scheme = x.Scheme
		// The Gateway API: with a scheme and no port, the scheme's
		// well-known port.
		port = 80
		if x.Scheme == "https" {
			port = 443
		}
	}
	if x.Port != 0 {
		port = x.Port
	}
	h := host
	if x.Hostname != "" {
		h = x.Hostname
	}
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	if (out.Scheme == "http" && port == 80) || (out.Scheme == "https" && port == 443) || port == 0 {
		out.Host = h
	} else {
		out.Host = h + ":" + strconv.Itoa(port)
	}
	path := r.URL.Path
	switch x.PathType {
	case PathReplaceFull:
		path = x.PathValue
	case PathReplacePrefix:
		// The matched prefix (whole segments) is replaced, the rest kept:
		// /old/x with prefix /old and value /new → /new/x; value / → /x.
		rest := strings.TrimPrefix(path, strings.TrimSuffix(prefix, "/"))
		repl := strings.TrimSuffix(x.PathValue, "/")
		path = repl + rest
		if path == "" {
			path = "/"
		} else if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
	}
	out.Path = path
	return out.String()
}
