package nft

import (
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// TestDispatchHashMaps: a dispatch map whose elements are single values
// (or short ranges, expanded into no more kernel elements than the
// intervals would take) is a hash map of single values; one with a wide
// range stays an interval map. The semantics are the interpreter's
// (TestClassifierMatchesReference) and the kernel's (TestKernelDifferential)
// business; this test pins which maps are which.
func TestDispatchHashMaps(t *testing.T) {
	p, err := policy.Load("flowpath.yaml", []byte(`name: flowpath
ruleCollectionGroups:
  - name: g
    priority: 200
    ruleCollections:
      - name: c
        kind: Network
        priority: 100
        action: Allow
        rules:
          - {name: a1, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [192.0.2.1], destinationPorts: ['443']}
          - {name: a2, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [192.0.2.2], destinationPorts: ['443']}
          - {name: a3, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [192.0.2.3], destinationPorts: ['443']}
          - {name: a4, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [192.0.2.4], destinationPorts: ['443']}
          - {name: a5, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [192.0.2.5-192.0.2.6], destinationPorts: ['443']}
          - {name: a6, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [192.0.2.7], destinationPorts: ['443']}
          - {name: b1, protocols: [UDP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['1000-2000']}
          - {name: b2, protocols: [UDP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['53']}
          - {name: b3, protocols: [UDP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['54']}
          - {name: b4, protocols: [UDP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['55']}
          - {name: b5, protocols: [UDP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['56']}
`), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := compilePolicy(p, labConfig())
	if err != nil {
		t.Fatal(err)
	}
	checkSets(t, rs)
	kinds := map[string]SetKind{}
	for _, s := range rs.Sets {
		if !s.vmap() {
			continue
		}
		key := stripHash(s.Name)
		if _, dup := kinds[key]; dup {
			t.Fatalf("two maps %s", key)
		}
		kinds[key] = s.Kind
		if s.Kind == SetVMapHash {
			for _, e := range s.Elems {
				if e.iv.lo != e.iv.hi {
					t.Fatalf("hash map %s holds the interval %s", s.Name, s.elemString(e))
				}
			}
		}
		t.Logf("%s kind %d: %d elements", s.Name, s.Kind, len(s.Elems))
	}
	// tcp4: destinations 192.0.2.1-4, 192.0.2.5-192.0.2.6 (two values:
	// two elements either way) and 192.0.2.7. udp4 and udp6 (the port
	// rules have any destination): ports 53-56 and 1000-2000.
	want := map[string]SetKind{"tcp4_map": SetVMapHash, "udp4_map": SetVMap, "udp6_map": SetVMap}
	for k, v := range want {
		if kinds[k] != v {
			t.Errorf("%s: kind %d, want %d (maps %v)", k, kinds[k], v, kinds)
		}
	}
	if _, err := lower(rs, nil, timeZero); err != nil {
		t.Fatal(err)
	}
	// (Every destination's child is one rule with the port left to test:
	// the key is the destination and the port, classifier.foldKey.)
	if got := rs.String(); !strings.Contains(got, "192.0.2.5 . 443 : goto") || !strings.Contains(got, "192.0.2.6 . 443 : goto") {
		t.Fatalf("the range 192.0.2.5-192.0.2.6 was not expanded:\n%s", got)
	}
}

// TestNoEmptyPrerouting: prerouting is a nat chain, and a nat chain, even
// an empty one, makes the kernel NAT every new flow (a null binding): the
// compiler leaves it out when nothing is in it, and keeps it for DNAT.
func TestNoEmptyPrerouting(t *testing.T) {
	net := `name: pre
ruleCollectionGroups:
  - name: g
    priority: 200
    ruleCollections:
      - name: c
        kind: Network
        priority: 100
        action: Allow
        rules:
          - {name: a, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [192.0.2.1], destinationPorts: ['443']}
`
	dnat := net + `      - name: d
        kind: DNAT
        priority: 110
        action: DNAT
        rules:
          - {name: web, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [203.0.113.32], destinationPorts: ['443'], translatedAddress: 10.42.1.200, translatedPort: '443'}
`
	for _, tc := range []struct {
		name, policy string
		snat         SNATMode
		pre, post    bool
	}{
		{"network rules, SNAT off", net, SNATOff, false, false},
		{"network rules, masquerade", net, SNATMasquerade, false, true},
		{"DNAT, SNAT off", dnat, SNATOff, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policy.Load("pre.yaml", []byte(tc.policy), policy.Options{})
			if err != nil {
				t.Fatal(err)
			}
			cfg := labConfig()
			cfg.SNAT = tc.snat
			rs, err := compilePolicy(p, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := rs.Chain("prerouting") != nil; got != tc.pre {
				t.Errorf("prerouting chain: %v, want %v", got, tc.pre)
			}
			if got := rs.Chain("postrouting") != nil; got != tc.post {
				t.Errorf("postrouting chain: %v, want %v", got, tc.post)
			}
			if _, err := lower(rs, nil, timeZero); err != nil {
				t.Fatal(err)
			}
		})
	}
}
