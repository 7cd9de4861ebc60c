package proxy

import (
	"context"
	"net"
	"net/netip"
	"slices"
)

// Resolver is where the proxy learns which addresses belong to a name. The
// proxy dials only addresses it got from here ("dial what you checked"):
// the destination a client chose is used only when it is among them.
type Resolver interface {
	// Addrs returns the addresses the firewall's DNS proxy handed out for
	// name that are still valid (TTL plus grace). It must be cheap: it is
	// asked first, on every connection. name is lower case without a
	// trailing dot.
	Addrs(name string) []netip.Addr
	// LookupNetIP resolves name afresh (the proxy asks once, when the
	// client's destination is not among Addrs, before refusing).
	LookupNetIP(ctx context.Context, name string) ([]netip.Addr, error)
}

// NetResolver is a Resolver over a *net.Resolver, for setups without the
// DNS proxy: Addrs knows nothing, so every check is a fresh lookup.
type NetResolver struct {
	// R is the resolver; nil means net.DefaultResolver.
	R *net.Resolver
}

// Addrs returns nil: a NetResolver remembers no answers.
func (NetResolver) Addrs(string) []netip.Addr { return nil }

// LookupNetIP resolves name to IPv4 and IPv6 addresses.
func (r NetResolver) LookupNetIP(ctx context.Context, name string) ([]netip.Addr, error) {
	res := r.R
	if res == nil {
		res = net.DefaultResolver
	}
	addrs, err := res.LookupNetIP(ctx, "ip", name)
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	return addrs, err
}

// StaticResolver maps names to fixed addresses (tests, `explain`, pinned
// hosts). Both methods answer from the map.
type StaticResolver map[string][]netip.Addr

// Addrs returns the addresses for name.
func (s StaticResolver) Addrs(name string) []netip.Addr { return s[name] }

// LookupNetIP returns the addresses for name, or a "no such host" error.
func (s StaticResolver) LookupNetIP(_ context.Context, name string) ([]netip.Addr, error) {
	if a, ok := s[name]; ok && len(a) > 0 {
		return slices.Clone(a), nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// containsAddr reports whether addrs holds a (compared unmapped, without
// zone).
func containsAddr(addrs []netip.Addr, a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, x := range addrs {
		if x.Unmap().WithZone("") == a {
			return true
		}
	}
	return false
}
