package nft

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// bigPolicy generates an enterprise-shaped policy of n network rules: 40
// rule collection groups of collections of 25 rules; mostly Allow, some
// Deny collections interleaved; sources are a few of 64 cluster and VNet
// subnets (10% any, some IPv6); destinations are per-rule public hosts or
// small prefixes (some service-tag-like lists of 8 prefixes, 3% any, 2%
// FQDNs); ports are common service ports or a NodePort range; TCP mostly,
// some UDP and Any. Every rule is distinct. The same seed gives the same
// policy.
func bigPolicy(n int, seed uint64) *policy.Policy {
	r := rand.New(rand.NewPCG(seed, 10000))
	p := &policy.Policy{Name: fmt.Sprintf("big%d", n)}
	subnets := make([]netip.Prefix, 64)
	for i := range subnets {
		subnets[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i / 8), byte(i%8) * 16, 0}), 24)
	}
	ports := []uint16{443, 80, 8080, 5432, 1433, 22, 3306, 6443, 9000, 53}
	rule := 0
	for gi := 0; rule < n; gi++ {
		g := &policy.Group{Name: fmt.Sprintf("grp%02d", gi), Priority: 100 + gi}
		p.Groups = append(p.Groups, g)
		for ci := 0; ci < 10 && rule < n; ci++ {
			act := policy.ActionAllow
			if r.IntN(100) < 15 {
				act = policy.ActionDeny
			}
			c := &policy.Collection{Name: fmt.Sprintf("coll%02d", ci), Kind: policy.KindNetwork, Priority: 100 + ci, Action: act, Group: g}
			g.Collections = append(g.Collections, c)
			for ri := 0; ri < 25 && rule < n; ri++ {
				ru := &policy.Rule{Name: fmt.Sprintf("r%05d", rule), Collection: c}
				switch x := r.IntN(100); {
				case x < 70:
					ru.Protocols = policy.ProtoTCP
				case x < 85:
					ru.Protocols = policy.ProtoUDP
				default:
					ru.Protocols = policy.ProtoAny
				}
				var sb policy.AddrSetBuilder
				if r.IntN(10) == 0 {
					sb.AddAny()
				} else {
					for range 1 + r.IntN(2) {
						sb.AddPrefix(subnets[r.IntN(len(subnets))])
					}
					if r.IntN(5) == 0 {
						sb.AddPrefix(netip.MustParsePrefix(fmt.Sprintf("2001:db8:42:%x::/64", r.IntN(64))))
					}
				}
				ru.Source = sb.Build()
				var db policy.AddrSetBuilder
				host := uint32(rule)
				switch x := r.IntN(100); {
				case x < 3:
					db.AddAny()
				case x < 5:
					ru.DestinationFQDNs = []string{fmt.Sprintf("svc%d.example.com", rule)}
				case x < 10:
					for k := range 8 {
						base := 0x64400000 + (host*8+uint32(k))*64 // 100.64.0.0/10, /26s
						db.AddPrefix(netip.PrefixFrom(u32Addr(base), 26))
					}
				case x < 30:
					db.AddPrefix(netip.PrefixFrom(u32Addr(0xc6120000+host*8), 29)) // 198.18.0.0/15
				default:
					db.AddRange(u32Addr(0xc6120000+host*8), u32Addr(0xc6120000+host*8))
					if r.IntN(10) == 0 {
						// (the same /64s as before for the first 65,536 rules)
						db.AddPrefix(netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x:%x::/64", 0xac+rule>>16, rule&0xffff)))
					}
				}
				ru.Destination = db.Build()
				for range 1 + r.IntN(2) {
					if r.IntN(10) == 0 {
						ru.DestinationPorts = append(ru.DestinationPorts, policy.PortRange{Lo: 30000, Hi: 32767})
						continue
					}
					pt := ports[r.IntN(len(ports))]
					ru.DestinationPorts = append(ru.DestinationPorts, policy.PortRange{Lo: pt, Hi: pt})
				}
				ru.DestinationPorts = normPorts(ru.DestinationPorts)
				c.Rules = append(c.Rules, ru)
				rule++
			}
		}
	}
	return p
}

func u32Addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func normPorts(in []policy.PortRange) []policy.PortRange {
	var out []policy.PortRange
	for _, p := range in {
		dup := false
		for i := range out {
			if out[i] == p {
				dup = true
			}
		}
		if !dup {
			out = append(out, p)
		}
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].Lo < out[j-1].Lo; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// flatPolicy generates n network rules that are all distinct and all
// reachable (none shadows another): rule i allows TCP from its own /24
// (10.a.b.0/24) to its own address (192.0.a.b... spread over 198.18.0.0/15
// and 100.64.0.0/10) on port 443 or 8443, 25 rules to a collection and
// 40 collections to a group — the shape of the 100,000-rule policy of
// internal/policy's budget tests, where every rule costs the kernel a chain
// and a map element. Policies of another variant differ in every rule's
// port.
func flatPolicy(n, variant int) *policy.Policy {
	p := &policy.Policy{Name: fmt.Sprintf("flat%d", n)}
	var g *policy.Group
	var c *policy.Collection
	for i := range n {
		if i%1000 == 0 {
			g = &policy.Group{Name: fmt.Sprintf("g%d", i/1000), Priority: 100 + i/1000}
			p.Groups = append(p.Groups, g)
		}
		if i%25 == 0 {
			act := policy.ActionAllow
			if (i/25)%7 == 3 {
				act = policy.ActionDeny
			}
			c = &policy.Collection{Name: fmt.Sprintf("c%d", i%1000/25), Kind: policy.KindNetwork, Priority: 100 + i%1000/25, Action: act, Group: g}
			g.Collections = append(g.Collections, c)
		}
		ru := &policy.Rule{Name: fmt.Sprintf("r%06d", i), Collection: c, Protocols: policy.ProtoTCP}
		var sb, db policy.AddrSetBuilder
		sb.AddPrefix(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), 0}), 24))
		db.AddRange(u32Addr(0xc6120000+uint32(i)), u32Addr(0xc6120000+uint32(i)))
		ru.Source, ru.Destination = sb.Build(), db.Build()
		port := uint16(443)
		if (i+variant)%3 == 0 {
			port = 8443
		}
		ru.DestinationPorts = []policy.PortRange{{Lo: port, Hi: port}}
		c.Rules = append(c.Rules, ru)
	}
	return p
}
