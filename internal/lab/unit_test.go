package lab

import (
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"cw", true},
		{"cwtab12", true},
		{"abcdefgh", true},
		{"", false},
		{"abcdefghi", false}, // too long for interface-friendly names
		{"1cw", false},
		{"CW", false},
		{"cw-1", false},
		{"../x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckName(tt.name)
			if (err == nil) != tt.ok {
				t.Errorf("CheckName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
		})
	}
}

// TestNamesTable checks the name table's invariants: unique names and
// addresses, v4 and v6 for each, documentation-range addresses only.
func TestNamesTable(t *testing.T) {
	doc4 := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.18.0.0/15"),
	}
	doc6 := netip.MustParsePrefix("2001:db8::/32")
	seen := map[string]bool{}
	for _, n := range Names {
		for _, k := range []string{n.Name, n.V4.String(), n.V6.String()} {
			if seen[k] {
				t.Errorf("%s: %s used twice", n.Name, k)
			}
			seen[k] = true
		}
		if !n.V4.Is4() || !(doc4[0].Contains(n.V4) || doc4[1].Contains(n.V4)) {
			t.Errorf("%s: v4 %s not in a documentation/benchmark range", n.Name, n.V4)
		}
		if !n.V6.Is6() || !doc6.Contains(n.V6) {
			t.Errorf("%s: v6 %s not in 2001:db8::/32", n.Name, n.V6)
		}
		if got, ok := Lookup(strings.ToUpper(n.Name) + "."); !ok || got.Name != n.Name {
			t.Errorf("Lookup(%q) = %v, %v", n.Name, got, ok)
		}
		for _, a := range []netip.Addr{n.V4, n.V6} {
			if got, ok := NameOf(a); !ok || got.Name != n.Name {
				t.Errorf("NameOf(%s) = %v, %v", a, got, ok)
			}
		}
	}
	if seen[DNSV4.String()] || seen[DNSV6.String()] {
		t.Errorf("the DNS server's address is also a name's")
	}
}

// TestAzureEndpointInServiceTags keeps the AzureCloud endpoint inside the
// example service tags' AzureCloud.eastus ranges, and the non-Azure one
// outside every AzureCloud range.
func TestAzureEndpointInServiceTags(t *testing.T) {
	data, err := os.ReadFile("../../examples/service-tags.json")
	if err != nil {
		t.Fatal(err)
	}
	var tags struct {
		Values []struct {
			Name       string `json:"name"`
			Properties struct {
				AddressPrefixes []string `json:"addressPrefixes"`
			} `json:"properties"`
		} `json:"values"`
	}
	if err := json.Unmarshal(data, &tags); err != nil {
		t.Fatal(err)
	}
	in := func(tag string, a netip.Addr) bool {
		for _, v := range tags.Values {
			if v.Name != tag && !(tag == "AzureCloud*" && strings.HasPrefix(v.Name, "AzureCloud")) {
				continue
			}
			for _, p := range v.Properties.AddressPrefixes {
				if netip.MustParsePrefix(p).Contains(a) {
					return true
				}
			}
		}
		return false
	}
	az, non := MustLookup(NameAzureCloud), MustLookup(NameNonAzure)
	for _, a := range []netip.Addr{az.V4, az.V6} {
		if !in("AzureCloud.eastus", a) {
			t.Errorf("%s (%s) not in AzureCloud.eastus", a, az.Name)
		}
	}
	for _, n := range Names {
		if n.Name == NameAzureCloud {
			continue
		}
		for _, a := range []netip.Addr{n.V4, n.V6} {
			if in("AzureCloud*", a) {
				t.Errorf("%s (%s) is inside an AzureCloud range", a, n.Name)
			}
		}
	}
	if !non.Tunnel || !az.Tunnel {
		t.Errorf("tunnel endpoints must answer TCP 9000 and UDP 1194")
	}
}

// TestDocsListEveryAddress keeps docs/lab.md in step with the tables.
func TestDocsListEveryAddress(t *testing.T) {
	data, err := os.ReadFile("../../docs/lab.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	want := []string{DNSV4.String(), DNSV6.String(), FWInside, FWPrivate, FWOutside, APIServerName, PeerHeader}
	for _, n := range Names {
		want = append(want, n.Name, n.V4.String(), n.V6.String())
	}
	for _, a := range []netip.Addr{NodeV4, NodeV6, StoreV4, StoreV6, APIV4, APIV6, FWInsideV4, FWInsideV6,
		FWPrivateV4, FWPrivateV6, FWPublicV4, FWPublicV6, FWIngressV4, FWIngressV6, InetFWSideV4, InetFWSideV6, InetClientSideV4,
		InetClientSideV6, ClientAuthorizedV4, ClientUnauthorizedV4, ClientAuthorizedV6, ClientUnauthorizedV6} {
		want = append(want, a.String())
	}
	want = append(want, HostNames...)
	for _, w := range want {
		if !strings.Contains(doc, w) {
			t.Errorf("docs/lab.md does not mention %s", w)
		}
	}
}

func TestPKI(t *testing.T) {
	dir := t.TempDir()
	if err := writePKI(dir); err != nil {
		t.Fatal(err)
	}
	pool, err := CAPool(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leaves() {
		t.Run(l.name, func(t *testing.T) {
			c, err := loadLeaf(dir, l.name)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(c.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			opts := x509.VerifyOptions{Roots: pool, DNSName: l.name}
			if _, err := leaf.Verify(opts); err != nil {
				t.Errorf("verify as %s: %v", l.name, err)
			}
			for _, a := range l.addrs {
				opts.DNSName = a.String()
				if _, err := leaf.Verify(opts); err != nil {
					t.Errorf("verify as %s: %v", a, err)
				}
			}
			opts.DNSName = "other.example"
			if _, err := leaf.Verify(opts); err == nil {
				t.Errorf("certificate for %s also verifies for other.example", l.name)
			}
		})
	}
	if fi, err := os.Stat(filepath.Join(dir, caKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode: %v %v", fi, err)
	}
}

func TestNTPReply(t *testing.T) {
	req := make([]byte, 48)
	req[0] = 4<<3 | 3 // v4, client
	req[2] = 6
	binary.BigEndian.PutUint64(req[40:], 0x1122334455667788)
	now := time.Now()
	out := ntpReply(req, now)
	if len(out) != 48 {
		t.Fatalf("reply length %d", len(out))
	}
	if out[0]>>6 != 0 || out[0]>>3&7 != 4 || out[0]&7 != 4 {
		t.Errorf("LI/VN/mode = %08b", out[0])
	}
	if out[1] != 1 || out[2] != 6 {
		t.Errorf("stratum %d poll %d", out[1], out[2])
	}
	if got := binary.BigEndian.Uint64(out[24:]); got != 0x1122334455667788 {
		t.Errorf("origin %x, want the client's transmit timestamp", got)
	}
	tx := binary.BigEndian.Uint64(out[40:])
	secs := int64(tx>>32) - ntpEpochOffset
	if d := time.Unix(secs, 0).Sub(now); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("transmit time off by %s", d)
	}
	for _, bad := range [][]byte{req[:47], append([]byte{4<<3 | 4}, req[1:]...)} {
		if ntpReply(bad, now) != nil {
			t.Errorf("answered a non-client packet % x", bad[:1])
		}
	}
}

// TestAuthority runs the lab DNS on loopback and queries it.
func TestAuthority(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: &authority{zones: Zones()}}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })

	ghcr := MustLookup(NameGHCR)
	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		answer []string // rdata
		soa    bool     // SOA in authority
	}{
		{"A", "ghcr.io.", dns.TypeA, dns.RcodeSuccess, []string{ghcr.V4.String()}, false},
		{"AAAA", "ghcr.io.", dns.TypeAAAA, dns.RcodeSuccess, []string{ghcr.V6.String()}, false},
		{"case-insensitive", "GHCR.IO.", dns.TypeA, dns.RcodeSuccess, []string{ghcr.V4.String()}, false},
		{"ANY", "ghcr.io.", dns.TypeANY, dns.RcodeSuccess, []string{ghcr.V4.String(), ghcr.V6.String()}, false},
		{"MX is NODATA", "ghcr.io.", dns.TypeMX, dns.RcodeSuccess, nil, true},
		{"deep name", "mystorage.blob.core.windows.net.", dns.TypeA, dns.RcodeSuccess, []string{"192.0.2.12"}, false},
		{"empty non-terminal", "blob.core.windows.net.", dns.TypeA, dns.RcodeSuccess, nil, true},
		{"apex SOA", "windows.net.", dns.TypeSOA, dns.RcodeSuccess, []string{"SOA"}, false},
		{"unknown in zone", "nosuch.ghcr.io.", dns.TypeA, dns.RcodeNameError, nil, true},
		{"unknown sibling", "other.blob.core.windows.net.", dns.TypeAAAA, dns.RcodeNameError, nil, true},
		{"outside the zones", "google.com.", dns.TypeA, dns.RcodeRefused, nil, false},
		{"suffix is not a zone", "xghcr.io.", dns.TypeA, dns.RcodeRefused, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion(tt.qname, tt.qtype)
			c := &dns.Client{Timeout: 2 * time.Second}
			r, _, err := c.Exchange(m, pc.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != tt.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
			}
			if tt.rcode != dns.RcodeRefused && !r.Authoritative {
				t.Errorf("answer not authoritative")
			}
			var got []string
			for _, rr := range r.Answer {
				switch rr := rr.(type) {
				case *dns.A:
					got = append(got, rr.A.String())
				case *dns.AAAA:
					got = append(got, rr.AAAA.String())
				case *dns.SOA:
					got = append(got, "SOA")
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.answer, ",") {
				t.Errorf("answer %v, want %v", got, tt.answer)
			}
			hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA
			if hasSOA != tt.soa {
				t.Errorf("SOA in authority: %v, want %v (%v)", hasSOA, tt.soa, r.Ns)
			}
		})
	}
}
