package match

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// This file holds the deterministic policy generators of the benchmarks
// and the differential tests. Policies are built in wire form and go
// through policy.Validate, the path real policies take.

// genBenchFile builds a policy of n rules shaped like a large real one:
// network rules with distinct destination /32s and /24s, some CIDRs,
// ranges, IPv6 prefixes and address lists, port lists and ranges, sources
// mostly 10.42.0.0/16 subnets and a few '*'; application rules with
// '*.svcN.example' and 'apiN.example.com'; a few DNAT rules; spread over
// groups of collections of at most 500 rules.
func genBenchFile(n int) *policy.File {
	rng := rand.New(rand.NewPCG(42, uint64(n)))
	f := &policy.File{Name: fmt.Sprintf("bench-%d", n)}
	perColl := min(500, max(5, n/20))
	groups := 5
	dnat := policy.WireCollection{Name: "publish", Kind: "DNAT", Priority: 100, Action: "DNAT"}
	for i := 0; i < 4; i++ {
		dnat.Rules = append(dnat.Rules, policy.WireRule{
			Name: fmt.Sprintf("dnat%d", i), Protocols: []string{"TCP"}, SourceAddresses: []string{"*"},
			DestinationAddresses: []string{fmt.Sprintf("203.0.113.%d", 10+i)}, DestinationPorts: []string{"443"},
			TranslatedAddress: fmt.Sprintf("10.42.200.%d", 10+i), TranslatedPort: "443",
		})
	}
	collsPerGroup := max(2, (n+perColl*groups-1)/(perColl*groups))
	made, coll := 0, 0
	for g := 0; g < groups; g++ {
		wg := policy.WireGroup{Name: fmt.Sprintf("group%d", g), Priority: 100 + 100*g}
		if g == 0 {
			wg.RuleCollections = append(wg.RuleCollections, dnat)
		}
		for c := 0; c < collsPerGroup && made < n; c++ {
			kind := "Network"
			if coll%5 == 1 || coll%5 == 3 { // 60 % network, 40 % application
				kind = "Application"
			}
			action := "Allow"
			if coll%7 == 6 {
				action = "Deny"
			}
			coll++
			wc := policy.WireCollection{Name: fmt.Sprintf("coll%d", c), Kind: kind, Priority: 1000 + c, Action: action}
			for r := 0; r < perColl && made < n; r++ {
				wc.Rules = append(wc.Rules, genBenchRule(rng, kind, made, n))
				made++
			}
			wg.RuleCollections = append(wg.RuleCollections, wc)
		}
		f.RuleCollectionGroups = append(f.RuleCollectionGroups, wg)
	}
	return f
}

// anyDst says whether network rule i of n goes to any destination: three
// rules, early, in the middle and late, whatever n.
func anyDst(i, n int) bool { return i == 5 || i == n/2+5 || i == n-n/20+5 }

func genBenchRule(rng *rand.Rand, kind string, i, n int) policy.WireRule {
	r := policy.WireRule{Name: fmt.Sprintf("r%d", i)}
	if i%10 == 0 {
		r.SourceAddresses = []string{"*"}
	} else {
		r.SourceAddresses = []string{fmt.Sprintf("10.42.%d.0/24", rng.IntN(256))}
	}
	if kind == "Application" {
		switch i % 3 {
		case 0:
			r.TargetFQDNs = []string{fmt.Sprintf("*.svc%d.example", i)}
		case 1:
			r.TargetFQDNs = []string{fmt.Sprintf("api%d.example.com", i)}
		default:
			r.TargetFQDNs = []string{fmt.Sprintf("*cdn%d.example.net", i), fmt.Sprintf("api%d.example.com", i)}
		}
		r.Protocols = []string{"Https:443"}
		if i%4 == 0 {
			r.Protocols = append(r.Protocols, "Http:80")
		}
		return r
	}
	switch i % 6 {
	case 0, 1, 2:
		r.Protocols = []string{"TCP"}
	case 3:
		r.Protocols = []string{"UDP"}
	case 4:
		r.Protocols = []string{"TCP", "UDP"}
	default:
		r.Protocols = []string{"Any"}
	}
	// Destinations are distinct per rule: a bijective scramble of i picks
	// the /32 or /24, so large policies do not pile rules on one prefix.
	h := uint32(i) * 2654435761 // odd multiplier: a bijection mod 2^32
	v4 := func(first byte, x uint32) string {
		return fmt.Sprintf("%d.%d.%d.%d", first, byte(x>>16), byte(x>>8), byte(x))
	}
	switch d := i % 20; {
	case anyDst(i, n): // a few rules to any destination
		r.DestinationAddresses = []string{"*"}
	case d < 9: // scattered /32s
		r.DestinationAddresses = []string{v4(11, h>>8)}
	case d < 16: // /24s
		r.DestinationAddresses = []string{v4(byte(20+h>>30), h>>8&0xffff00) + "/24"}
	case d == 16 && i%100 == 16: // a few wide CIDRs
		x := i / 100 % 1024
		r.DestinationAddresses = []string{fmt.Sprintf("100.%d.%d.0/20", 64+x>>4, x&15<<4)}
	case d == 16:
		x := h >> 8 & 0xffff00
		r.DestinationAddresses = []string{v4(30, x|10) + "-" + v4(30, x|(10+uint32(rng.IntN(240))))}
	case d == 17:
		r.DestinationAddresses = []string{fmt.Sprintf("2001:db8:%x:%x::/64", h>>16, h&0xffff)}
	case d == 18:
		r.DestinationAddresses = []string{fmt.Sprintf("2001:db9:%x::%x", h>>16, h&0xffff)}
	default:
		r.DestinationAddresses = []string{v4(12, h>>8), v4(13, h>>8), v4(14, h>>8)}
	}
	switch i % 5 {
	case 0:
		r.DestinationPorts = []string{"443"}
	case 1:
		r.DestinationPorts = []string{"80", "443", "8443"}
	case 2:
		r.DestinationPorts = []string{"8000-8100"}
	case 3:
		r.DestinationPorts = []string{fmt.Sprint(1024 + rng.IntN(60000))}
	default:
		r.DestinationPorts = []string{"53", "5432", "6000-6010"}
	}
	if anyDst(i, n) {
		r.DestinationPorts = []string{"7"}
	}
	return r
}

// genBenchFlows returns 256 flows (a power of two: the benchmarks index
// them with a mask) that hit early rules, late rules and no rule (about a
// third each), with names for application rules.
func genBenchFlows(p *policy.Policy, n int) []Flow {
	rng := rand.New(rand.NewPCG(7, uint64(n)))
	var flows []Flow
	pick := func(rules []*policy.Rule, early bool) *policy.Rule {
		k := max(1, len(rules)/20)
		if early {
			return rules[rng.IntN(k)]
		}
		return rules[len(rules)-1-rng.IntN(k)]
	}
	net, app := p.RulesOf(policy.KindNetwork), p.RulesOf(policy.KindApplication)
	const count = 256
	for i := 0; len(flows) < count-1; i++ {
		early := i%2 == 0
		switch i % 6 {
		case 0, 1: // network rule
			r := pick(net, early)
			f := Flow{Src: srcOf(r), Dst: netip.MustParseAddr("192.0.2.7"), Port: r.DestinationPorts[0].Lo, Proto: policy.ProtoTCP}
			if !r.Destination.Any {
				f.Dst = r.Destination.Ranges[0].From
			}
			if r.Protocols&policy.ProtoTCP == 0 {
				f.Proto = policy.ProtoUDP
			}
			flows = append(flows, f)
		case 2, 3: // application rule
			r := pick(app, early)
			name := r.TargetFQDNs[0].Name
			switch r.TargetFQDNs[0].Kind {
			case policy.FQDNSubdomains:
				name = "Web." + name
			case policy.FQDNSuffix:
				name = "eu-" + name
			}
			flows = append(flows, Flow{Src: srcOf(r), Dst: netip.MustParseAddr("192.0.2.80"), Proto: policy.ProtoTCP,
				Port: 443, Name: name, Scheme: policy.SchemeHTTPS})
		case 4: // no network rule
			flows = append(flows, Flow{Src: netip.AddrFrom4([4]byte{10, 42, byte(rng.IntN(256)), 9}),
				Dst: netip.AddrFrom4([4]byte{11, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}), Proto: policy.ProtoTCP, Port: 1})
		default: // no application rule
			flows = append(flows, Flow{Src: netip.AddrFrom4([4]byte{10, 42, byte(rng.IntN(256)), 9}), Dst: netip.MustParseAddr("192.0.2.80"),
				Proto: policy.ProtoTCP, Port: 443, Name: fmt.Sprintf("www.nomatch%d.example", i), Scheme: policy.SchemeHTTPS})
		}
	}
	flows = append(flows, Flow{Src: netip.MustParseAddr("198.51.100.1"), Dst: netip.MustParseAddr("203.0.113.11"), Proto: policy.ProtoTCP, Port: 443})
	return flows
}

func srcOf(r *policy.Rule) netip.Addr {
	if r.Source.Any {
		return netip.MustParseAddr("10.42.77.7")
	}
	return r.Source.Ranges[0].From.Next()
}

var benchCache sync.Map // n -> *benchEntry

type benchEntry struct {
	once  sync.Once
	p     *policy.Policy
	flows []Flow
	err   error
}

// benchPolicy returns the validated generated policy of n rules and its
// flows, built once per n.
func benchPolicy(tb testing.TB, n int) (*policy.Policy, []Flow) {
	tb.Helper()
	v, _ := benchCache.LoadOrStore(n, &benchEntry{})
	e := v.(*benchEntry)
	e.once.Do(func() {
		e.p, e.err = policy.Validate(genBenchFile(n), "", policy.Options{})
		if e.err == nil {
			e.flows = genBenchFlows(e.p, n)
		}
	})
	if e.err != nil {
		tb.Fatalf("generated policy: %v", e.err)
	}
	return e.p, e.flows
}

// The random generator for differential tests draws from small pools so
// that rules overlap and flows hit them often.

var (
	poolV4   = []string{"10.0.0.0", "10.0.0.1", "10.0.0.7", "10.0.0.8", "10.0.0.255", "10.0.1.0", "10.0.1.3", "192.0.2.1", "192.0.2.200", "0.0.0.0", "255.255.255.255"}
	poolV6   = []string{"2001:db8::", "2001:db8::1", "2001:db8::ff", "2001:db8:0:1::", "fd00::1", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}
	poolPort = []uint16{1, 22, 53, 80, 443, 8080, 8443, 65535}
	poolLbl  = []string{"a", "b", "com", "contoso", "xcontoso", "net", "dotnet", "ex-1", "a-label-longer-than-nineteen"}
)

func pickS[T any](rng *rand.Rand, l []T) T { return l[rng.IntN(len(l))] }

func randAddrToken(rng *rand.Rand) string {
	switch rng.IntN(10) {
	case 0:
		return "*"
	case 1, 2:
		return pickS(rng, poolV4)
	case 3:
		return pickS(rng, poolV6)
	case 4, 5:
		bits := pickS(rng, []int{0, 1, 7, 8, 16, 23, 24, 25, 28, 30, 31, 32})
		return netip.PrefixFrom(netip.MustParseAddr(pickS(rng, poolV4)), bits).Masked().String()
	case 6:
		bits := pickS(rng, []int{0, 32, 64, 120, 126, 127, 128})
		return netip.PrefixFrom(netip.MustParseAddr(pickS(rng, poolV6)), bits).Masked().String()
	case 7, 8:
		pool := poolV4
		if rng.IntN(3) == 0 {
			pool = poolV6
		}
		a, b := netip.MustParseAddr(pickS(rng, pool)), netip.MustParseAddr(pickS(rng, pool))
		if b.Less(a) {
			a, b = b, a
		}
		return a.String() + "-" + b.String()
	default:
		return "::ffff:10.0.0.0/120" // a 4-in-6 prefix: an IPv6 range no unmapped flow is in
	}
}

func randAddrs(rng *rand.Rand) []string {
	out := []string{randAddrToken(rng)}
	for rng.IntN(3) == 0 {
		out = append(out, randAddrToken(rng))
	}
	return out
}

func randName(rng *rand.Rand) string {
	n := 1 + rng.IntN(3)
	l := make([]string, n)
	for i := range l {
		l[i] = pickS(rng, poolLbl)
	}
	return strings.Join(l, ".")
}

func randPorts(rng *rand.Rand, single bool) []string {
	var out []string
	for len(out) == 0 || rng.IntN(3) == 0 {
		switch {
		case single || rng.IntN(2) == 0:
			out = append(out, fmt.Sprint(pickS(rng, poolPort)))
		case rng.IntN(4) == 0:
			out = append(out, "*")
		default:
			a, b := pickS(rng, poolPort), pickS(rng, poolPort)
			out = append(out, fmt.Sprintf("%d-%d", min(a, b), max(a, b)))
		}
	}
	return out
}

// randFile builds a random valid policy of up to maxRules rules.
func randFile(rng *rand.Rand, maxRules int) *policy.File {
	f := &policy.File{}
	ng := 1 + rng.IntN(3)
	gprio := rng.Perm(10)
	made, ri := 0, 0
	for g := 0; g < ng; g++ {
		wg := policy.WireGroup{Name: fmt.Sprintf("g%d", g), Priority: 100 + 10*gprio[g]}
		nc := 1 + rng.IntN(4)
		cprio := rng.Perm(20)
		for c := 0; c < nc; c++ {
			kind := pickS(rng, []string{"DNAT", "Network", "Network", "Application", "Application"})
			action := pickS(rng, []string{"Allow", "Deny"})
			if kind == "DNAT" {
				action = "DNAT"
			}
			wc := policy.WireCollection{Name: fmt.Sprintf("c%d", c), Kind: kind, Priority: 100 + 10*cprio[c], Action: action}
			nr := 1 + rng.IntN(5)
			for r := 0; r < nr && made < maxRules; r++ {
				made++
				ri++
				wr := policy.WireRule{Name: fmt.Sprintf("r%d", ri), SourceAddresses: randAddrs(rng)}
				switch kind {
				case "DNAT":
					wr.Protocols = [][]string{{"TCP"}, {"UDP"}, {"TCP", "UDP"}, {"Any"}}[rng.IntN(4)]
					pool, to := poolV4, "10.9.9.9"
					if rng.IntN(3) == 0 {
						pool, to = poolV6, "fd00::99"
					}
					wr.DestinationAddresses = []string{pickS(rng, pool)}
					if rng.IntN(4) == 0 {
						wr.DestinationAddresses = append(wr.DestinationAddresses, pickS(rng, pool))
					}
					wr.DestinationPorts = randPorts(rng, true)
					wr.TranslatedAddress, wr.TranslatedPort = to, fmt.Sprint(pickS(rng, poolPort))
				case "Network":
					wr.Protocols = [][]string{{"TCP"}, {"UDP"}, {"ICMP"}, {"TCP", "UDP"}, {"Any"}}[rng.IntN(5)]
					if rng.IntN(4) != 0 {
						wr.DestinationAddresses = randAddrs(rng)
					}
					if len(wr.DestinationAddresses) == 0 || rng.IntN(4) == 0 {
						wr.DestinationFQDNs = []string{randName(rng)}
					}
					wr.DestinationPorts = randPorts(rng, false)
				default:
					wr.Protocols = [][]string{{"Https"}, {"Http"}, {"Http:8080", "Https:8443"}, {"Mssql"}}[rng.IntN(4)]
					for len(wr.TargetFQDNs) == 0 || rng.IntN(3) == 0 {
						var pat string
						switch rng.IntN(8) {
						case 0:
							pat = "*"
						case 1, 2:
							pat = "*." + randName(rng)
						case 3, 4:
							pat = "*" + randName(rng)
						default:
							pat = randName(rng)
						}
						if rng.IntN(4) == 0 {
							pat = strings.ToUpper(pat)
						}
						wr.TargetFQDNs = append(wr.TargetFQDNs, pat)
					}
				}
				wc.Rules = append(wc.Rules, wr)
			}
			wg.RuleCollections = append(wg.RuleCollections, wc)
		}
		f.RuleCollectionGroups = append(f.RuleCollectionGroups, wg)
	}
	return f
}

// randResolver maps every name the generator can build with two or fewer
// labels to some pool addresses.
func randResolver(rng *rand.Rand) mapResolver {
	r := mapResolver{}
	var names []string
	for _, a := range poolLbl {
		names = append(names, a)
		for _, b := range poolLbl {
			names = append(names, a+"."+b)
		}
	}
	for _, n := range names {
		for k := rng.IntN(3); k > 0; k-- {
			pool := poolV4
			if rng.IntN(3) == 0 {
				pool = poolV6
			}
			r[n] = append(r[n], netip.MustParseAddr(pickS(rng, pool)))
		}
	}
	return r
}

func randAddr(rng *rand.Rand) netip.Addr {
	switch rng.IntN(12) {
	case 0:
		return netip.Addr{}
	case 1:
		return netip.AddrFrom16(netip.MustParseAddr(pickS(rng, poolV4)).As16()) // 4-in-6
	case 2:
		return netip.MustParseAddr(pickS(rng, poolV6)).WithZone("eth0")
	case 3:
		return netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(2)), byte(rng.IntN(256))})
	case 4, 5, 6:
		return netip.MustParseAddr(pickS(rng, poolV6))
	default:
		return netip.MustParseAddr(pickS(rng, poolV4))
	}
}

// randFlowFor returns a flow aimed at a random rule of p (so that rules
// are hit often), then perturbed; or a fully random flow.
func randFlowFor(rng *rand.Rand, p *policy.Policy, res mapResolver) Flow {
	f := randFlow(rng)
	kinds := []policy.Kind{policy.KindDNAT, policy.KindNetwork, policy.KindApplication}
	rules := p.RulesOf(kinds[rng.IntN(3)])
	if len(rules) == 0 || rng.IntN(5) == 0 {
		return f
	}
	r := rules[rng.IntN(len(rules))]
	inSet := func(s *policy.AddrSet, old netip.Addr) netip.Addr {
		if s.Any || len(s.Ranges) == 0 {
			return old
		}
		ar := s.Ranges[rng.IntN(len(s.Ranges))]
		switch rng.IntN(4) {
		case 0:
			return ar.To
		case 1:
			if n := ar.From.Next(); n.IsValid() && !ar.To.Less(n) {
				return n
			}
		}
		return ar.From
	}
	f.Src = inSet(&r.Source, f.Src)
	switch r.Kind() {
	case policy.KindApplication:
		f.Proto = policy.ProtoTCP
		ap := r.AppProtocols[rng.IntN(len(r.AppProtocols))]
		f.Scheme, f.Port = ap.Scheme, ap.Port
		pat := r.TargetFQDNs[rng.IntN(len(r.TargetFQDNs))]
		switch pat.Kind {
		case policy.FQDNExact:
			f.Name = pat.Name
		case policy.FQDNSubdomains:
			f.Name = pickS(rng, []string{"", "x.", "a.b.", "."}) + pat.Name
		case policy.FQDNSuffix:
			f.Name = pickS(rng, []string{"", "x", "a.", "."}) + pat.Name
		}
		if rng.IntN(3) == 0 {
			f.Name = strings.ToUpper(f.Name)
		}
	default:
		f.Dst = inSet(&r.Destination, f.Dst)
		if len(r.DestinationFQDNs) > 0 && rng.IntN(2) == 0 {
			if as := res[r.DestinationFQDNs[0]]; len(as) > 0 {
				f.Dst = as[rng.IntN(len(as))]
			}
		}
		if len(r.DestinationPorts) > 0 {
			pr := r.DestinationPorts[rng.IntN(len(r.DestinationPorts))]
			f.Port = pickS(rng, []uint16{pr.Lo, pr.Hi, pr.Lo + (pr.Hi-pr.Lo)/2})
		}
		for _, pr := range []policy.Proto{policy.ProtoTCP, policy.ProtoUDP, policy.ProtoICMP} {
			if r.Protocols&pr != 0 && rng.IntN(2) == 0 {
				f.Proto = pr
			}
		}
	}
	if rng.IntN(6) == 0 { // perturb one field
		switch rng.IntN(3) {
		case 0:
			f.Src = randAddr(rng)
		case 1:
			f.Port++
		default:
			f.Dst = f.Dst.Next()
		}
	}
	return f
}

// randGateway returns a gateway whose addresses come from the pools (its
// public IPs include the destinations of p's DNAT rules), with every kind
// of service.
func randGateway(rng *rand.Rand, p *policy.Policy) *Gateway {
	g := &Gateway{Proxy: rng.IntN(4) != 0}
	for _, r := range p.RulesOf(policy.KindDNAT) {
		for _, d := range r.Destination.Ranges {
			for a := d.From; ; a = a.Next() {
				if !slices.Contains(g.PublicIPs, a) {
					g.PublicIPs = append(g.PublicIPs, a)
				}
				if a == d.To {
					break
				}
			}
		}
	}
	for range 1 + rng.IntN(2) {
		g.PublicIPs = append(g.PublicIPs, netip.MustParseAddr(pickS(rng, append(poolV4, poolV6...))))
	}
	if rng.IntN(3) != 0 {
		g.PrivateIPs = append(g.PrivateIPs, netip.MustParseAddr(pickS(rng, poolV4)))
	}
	g.Services = []Service{
		{Name: "ICMP", From: FromAny, Proto: policy.ProtoICMP},
		{Name: "DNS", From: FromInside, Proto: policy.ProtoTCP | policy.ProtoUDP, Ports: []policy.PortRange{{Lo: 53, Hi: 53}}, Addrs: g.PrivateIPs},
		{Name: "ssh", From: FromInside, Proto: policy.ProtoTCP, Ports: []policy.PortRange{{Lo: 22, Hi: 22}}},
		{Name: "waf", From: FromOutside, Proto: policy.ProtoTCP, Ports: []policy.PortRange{{Lo: 443, Hi: 443}}, Addrs: g.PublicIPs[:1]},
	}
	return g
}

func randFlow(rng *rand.Rand) Flow {
	f := Flow{
		From:   pickS(rng, []Side{FromAny, FromInside, FromInside, FromOutside}),
		Src:    randAddr(rng),
		Dst:    randAddr(rng),
		Proto:  pickS(rng, []policy.Proto{0, policy.ProtoTCP, policy.ProtoTCP, policy.ProtoTCP, policy.ProtoUDP, policy.ProtoICMP, policy.ProtoTCP | policy.ProtoUDP}),
		Port:   pickS(rng, append([]uint16{0, 21, 1000, 65534}, poolPort...)),
		Scheme: pickS(rng, []policy.Scheme{policy.SchemeNone, policy.SchemeHTTP, policy.SchemeHTTPS, policy.SchemeHTTPS, policy.SchemeMSSQL}),
	}
	if f.Proto == policy.ProtoICMP && rng.IntN(2) == 0 {
		f.Port = 0
	}
	switch rng.IntN(10) {
	case 0:
		f.Name = pickS(rng, []string{"", ".", "..", "a..com", ".contoso.com", "\u212Aontoso.com", "*.com", "com.", "CoM..", strings.Repeat("a", 70) + ".com"})
	case 1:
		f.Name = randName(rng) + "."
	case 2:
		f.Name = strings.ToUpper(randName(rng))
	case 3:
		f.Name = pickS(rng, poolLbl) + randName(rng)
	default:
		f.Name = randName(rng)
		if rng.IntN(3) == 0 {
			f.Name = randName(rng) + "." + f.Name
		}
	}
	return f
}
