package match

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// TestDifferential compares the compiled matcher with the linear reference
// on thousands of random policies and flows (fixed seed).
func TestDifferential(t *testing.T) {
	policies, flowsEach := 3000, 60
	if testing.Short() {
		policies = 500
	}
	rng := rand.New(rand.NewPCG(2024, 11))
	checked, hits, paths := 0, map[policy.Kind]int{}, map[Path]int{}
	for i := 0; i < policies; i++ {
		wf := randFile(rng, 1+rng.IntN(25))
		p, err := policy.Validate(wf, "", policy.Options{})
		if err != nil {
			t.Fatalf("policy %d: generated policy does not validate: %v", i, err)
		}
		var res FQDNResolver
		table := randResolver(rng)
		if rng.IntN(4) != 0 {
			res = table
		}
		opts := Options{Resolver: res}
		if rng.IntN(2) == 0 {
			opts.Gateway = randGateway(rng, p)
		}
		m, err := Compile(p, opts)
		if err != nil {
			t.Fatalf("policy %d: %v", i, err)
		}
		for j := 0; j < flowsEach; j++ {
			f := randFlowFor(rng, p, table)
			if opts.Gateway != nil && rng.IntN(4) == 0 {
				f.Dst = pickS(rng, append(opts.Gateway.PublicIPs, opts.Gateway.PrivateIPs...))
			}
			got, want := m.Decide(f), m.DecideLinear(f)
			if got != want {
				t.Fatalf("policy %d flow %d %+v:\ncompiled %s\nlinear   %s\npolicy:\n%s", i, j, f, describe(got), describe(want), dumpRules(p))
			}
			checked++
			hits[got.Kind]++
			paths[got.Path]++
		}
	}
	// The generator must exercise every kind, or the test proves little.
	for _, k := range []policy.Kind{policy.KindInvalid, policy.KindDNAT, policy.KindNetwork, policy.KindApplication} {
		if hits[k] < checked/50 {
			t.Errorf("only %d of %d decisions by %v rules", hits[k], checked, k)
		}
	}
	for _, p := range []Path{PathForward, PathProxy, PathFirewall} {
		if paths[p] < checked/50 {
			t.Errorf("only %d of %d decisions on path %v", paths[p], checked, p)
		}
	}
	t.Logf("%d flows checked; decisions by kind: %v, by path: %v", checked, hits, paths)
}

func describe(d Decision) string {
	if d.Rule == nil {
		return d.Action.String() + " (" + d.Reason + ")"
	}
	return d.Action.String() + " by " + d.Rule.Path()
}

func dumpRules(p *policy.Policy) string {
	var s string
	for _, k := range []policy.Kind{policy.KindDNAT, policy.KindNetwork, policy.KindApplication} {
		for _, r := range p.RulesOf(k) {
			s += "  " + k.String() + " " + r.Path() + " proto=" + r.Protocols.String() + " src=" + r.Source.String() +
				" dst=" + r.Destination.String()
			for _, n := range r.DestinationFQDNs {
				s += " fqdn=" + n
			}
			for _, pr := range r.DestinationPorts {
				s += " port=" + pr.String()
			}
			for _, ap := range r.AppProtocols {
				s += " " + ap.String()
			}
			for _, pat := range r.TargetFQDNs {
				s += " target=" + pat.String()
			}
			s += "\n"
		}
	}
	return s
}

// fuzzPolicy is the fixed policy FuzzDecide runs against: a larger random
// policy plus the seed example.
func fuzzPolicy(tb testing.TB) (*policy.Policy, *Matcher, mapResolver) {
	rng := rand.New(rand.NewPCG(99, 1))
	p, err := policy.Validate(randFile(rng, 80), "", policy.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	res := randResolver(rng)
	m, err := Compile(p, Options{Resolver: res})
	if err != nil {
		tb.Fatal(err)
	}
	return p, m, res
}

func addrFromBytes(b []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(b) // invalid unless 4 or 16 bytes
	return a
}

// FuzzDecide checks the compiled matcher against the linear reference on
// fuzzed flows.
func FuzzDecide(f *testing.F) {
	p, m, res := fuzzPolicy(f)
	rng := rand.New(rand.NewPCG(5, 5))
	for i := 0; i < 40; i++ {
		fl := randFlowFor(rng, p, res)
		src, dst := fl.Src.AsSlice(), fl.Dst.AsSlice()
		f.Add(src, dst, uint8(fl.Proto), fl.Port, fl.Name, uint8(fl.Scheme), false)
	}
	f.Add([]byte{10, 0, 0, 1}, []byte{10, 0, 0, 7}, uint8(policy.ProtoTCP), uint16(443), "A.Contoso.COM.", uint8(policy.SchemeHTTPS), true)
	f.Fuzz(func(t *testing.T, src, dst []byte, proto uint8, port uint16, name string, scheme uint8, zone bool) {
		fl := Flow{Src: addrFromBytes(src), Dst: addrFromBytes(dst), Proto: policy.Proto(proto), Port: port, Name: name, Scheme: policy.Scheme(scheme)}
		if zone && fl.Dst.Is6() {
			fl.Dst = fl.Dst.WithZone("eth0")
		}
		got, want := m.Decide(fl), m.DecideLinear(fl)
		if got != want {
			t.Fatalf("flow %+v:\ncompiled %s\nlinear   %s", fl, describe(got), describe(want))
		}
	})
}
