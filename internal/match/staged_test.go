package match

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// TestCompileStaged: a staged compile answers the normalised rules at
// once and, once Built, decides every flow as Compile's matcher does;
// an index that cannot be built is Built's error (and Compile's), not a
// matcher. Run under -race: the build runs beside the readers of the
// normalised rules.
func TestCompileStaged(t *testing.T) {
	rng := rand.New(rand.NewPCG(2026, 12))
	for i := range 200 {
		p, err := policy.Validate(randFile(rng, 1+rng.IntN(25)), "", policy.Options{})
		if err != nil {
			t.Fatalf("policy %d: %v", i, err)
		}
		table := randResolver(rng)
		opts := Options{Resolver: table, Gateway: randGateway(rng, p)}
		full, err := Compile(p, opts)
		if err != nil {
			t.Fatalf("policy %d: %v", i, err)
		}
		m, err := CompileStaged(p, opts)
		if err != nil {
			t.Fatal(err)
		}
		// The normalised rules, read while the indexes build.
		for _, k := range []policy.Kind{policy.KindDNAT, policy.KindNetwork, policy.KindApplication} {
			if len(m.Rules(k)) != len(full.Rules(k)) {
				t.Fatalf("policy %d: staged %d %v rules, want %d", i, len(m.Rules(k)), k, len(full.Rules(k)))
			}
		}
		if len(m.FQDNs()) != len(full.FQDNs()) || len(m.SteeredPorts()) != len(full.SteeredPorts()) {
			t.Fatalf("policy %d: staged FQDNs or steered ports differ", i)
		}
		if err := m.Built(); err != nil {
			t.Fatal(err)
		}
		for j := range 50 {
			f := randFlowFor(rng, p, table)
			if got, want := m.Decide(f), full.Decide(f); got != want {
				t.Fatalf("policy %d flow %d %+v: staged %s, Compile %s", i, j, f, describe(got), describe(want))
			}
		}
	}

	// A policy not built by policy.Validate: ranges out of order.
	p, err := policy.Validate(randFile(rng, 5), "", policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p.Groups[0].Collections[0].Rules[0].Source = policy.AddrSet{Ranges: []policy.AddrRange{
		{From: netip.MustParseAddr("192.0.2.9"), To: netip.MustParseAddr("192.0.2.9")},
		{From: netip.MustParseAddr("192.0.2.1"), To: netip.MustParseAddr("192.0.2.1")},
	}}
	sm, err := CompileStaged(p, Options{})
	if err != nil {
		t.Fatalf("CompileStaged checks only what it normalises: %v", err)
	}
	if err := sm.Built(); err == nil || !strings.Contains(err.Error(), "not sorted") {
		t.Fatalf("Built: %v, want the index's error", err)
	}
	if _, err := Compile(p, Options{}); err == nil || !strings.Contains(err.Error(), "not sorted") {
		t.Fatalf("Compile: %v, want the index's error", err)
	}
}
