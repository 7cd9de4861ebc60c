package lab

import (
	"fmt"
	"strings"
)

// The ingress WAF in the lab (DaemonOptions.WAF): the firewall daemon runs
// the WAF (internal/waf) in fw on port 443 of the firewall's second public
// IP (FWIngressV4 203.0.113.33, FWIngressV6 2001:db8:cafe::33), with the
// lab CA's certificate for StoreServerName, in front of store-front
// (10.42.1.100:80). The first public IP (203.0.113.32) keeps the seed's
// DNAT rules, including the API server's on 443, so every client reaches
// the WAF and only the API server's authorized range reaches the API.
// Clients resolve StoreServerName to the ingress IP themselves (curl
// --resolve): the lab DNS does not serve it.
const (
	// StoreServerName is the name the WAF serves store-front under.
	StoreServerName = "store.example.com"
	// WAFConfigFile is the WAF's config in the state directory (written by
	// Up when DaemonOptions.WAF is set; tests may rewrite it and reload).
	WAFConfigFile = "waf.yaml"
	// WAFPort is the WAF's HTTPS port on the ingress addresses.
	WAFPort = 443
	// WAFHTTPPort is its plain HTTP port there (listeners public-http and
	// public6-http: no route of the file uses them; the Kubernetes
	// controller's routes and redirects to HTTPS do).
	WAFHTTPPort = 80
	// ForwardedForHeader is the response header in which the store server
	// reports the X-Forwarded-For request header it received (empty when
	// there was none), to check that the WAF passes the client's address.
	ForwardedForHeader = "X-Clusterwall-Forwarded-For"
)

// WAFConfig returns the WAF config of lab name: HTTPS listeners on
// 203.0.113.33:443 and [2001:db8:cafe::33]:443 with the certificate of
// StoreServerName (their default certificate), plain HTTP listeners on
// port 80 of the same addresses, the route store-front for that name on
// the HTTPS listeners to 10.42.1.100:80, and the policy store (CRS
// paranoia level 1, Prevention) on every listener.
func WAFConfig(name string) ([]byte, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	cert, key := leafPaths(StateDir(name), StoreServerName)
	var b strings.Builder
	fmt.Fprintf(&b, "# written by clusterwall lab up for lab %s: the ingress WAF in fw (docs/waf.md)\n", name)
	b.WriteString("listeners:\n")
	for _, l := range []struct{ name, addr string }{
		{"public", fmt.Sprintf("%s:%d", FWIngressV4, WAFPort)},
		{"public6", fmt.Sprintf("[%s]:%d", FWIngressV6, WAFPort)},
	} {
		fmt.Fprintf(&b, "  - name: %s\n    address: %q\n    policy: store\n", l.name, l.addr)
		fmt.Fprintf(&b, "    tls:\n      certificates:\n        - certFile: %q\n          keyFile: %q\n", cert, key)
	}
	for _, l := range []struct{ name, addr string }{
		{"public-http", fmt.Sprintf("%s:%d", FWIngressV4, WAFHTTPPort)},
		{"public6-http", fmt.Sprintf("[%s]:%d", FWIngressV6, WAFHTTPPort)},
	} {
		fmt.Fprintf(&b, "  - name: %s\n    address: %q\n    policy: store\n", l.name, l.addr)
	}
	b.WriteString("routes:\n")
	b.WriteString("  - name: store-front\n")
	b.WriteString("    listeners: [public, public6]\n")
	fmt.Fprintf(&b, "    hosts: [%s]\n", StoreServerName)
	fmt.Fprintf(&b, "    backends: [%q]\n", fmt.Sprintf("%s:80", StoreV4))
	b.WriteString("    healthCheck: {path: /, interval: 2s, timeout: 1s}\n")
	b.WriteString("policies:\n")
	b.WriteString("  - name: store\n    mode: Prevention\n    paranoiaLevel: 1\n")
	return []byte(b.String()), nil
}
