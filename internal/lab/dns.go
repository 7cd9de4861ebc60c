package lab

import (
	"context"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// dnsTTL is the TTL of every lab DNS answer: short, so that tests that
// learn addresses through the firewall's DNS proxy see expiry quickly.
const dnsTTL = 60

// authority is the lab internet's authoritative DNS server: A and AAAA for
// every entry of Names, NXDOMAIN for other names in the lab's zones,
// REFUSED for names outside them.
type authority struct {
	zones []string
}

func (a *authority) zoneOf(name string) string {
	for _, z := range a.zones {
		if name == z || strings.HasSuffix(name, "."+z) {
			return z
		}
	}
	return ""
}

func (a *authority) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	if r.Opcode != dns.OpcodeQuery || len(r.Question) != 1 {
		m.Rcode = dns.RcodeNotImplemented
		if r.Opcode == dns.OpcodeQuery {
			m.Rcode = dns.RcodeFormatError
		}
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.TrimSuffix(strings.ToLower(q.Name), ".")
	zone := a.zoneOf(name)
	if zone == "" || q.Qclass != dns.ClassINET {
		m.Rcode = dns.RcodeRefused
		w.WriteMsg(m)
		return
	}
	m.Authoritative = true
	soa := &dns.SOA{
		Hdr:     dns.RR_Header{Name: dns.Fqdn(zone), Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: dnsTTL},
		Ns:      dns.Fqdn("ns1." + zone),
		Mbox:    dns.Fqdn("hostmaster." + zone),
		Serial:  1,
		Refresh: 3600, Retry: 600, Expire: 86400, Minttl: dnsTTL,
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: dnsTTL}
	}
	n, found := Lookup(name)
	switch {
	case found:
		if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: n.V4.AsSlice()})
		}
		if q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: n.V6.AsSlice()})
		}
	case name == zone && q.Qtype == dns.TypeSOA:
		m.Answer = append(m.Answer, soa)
	case name == zone || a.hasDescendant(name):
		// The apex or an empty non-terminal: the name exists, no data.
	default:
		m.Rcode = dns.RcodeNameError
	}
	if len(m.Answer) == 0 {
		m.Ns = append(m.Ns, soa)
	}
	w.WriteMsg(m)
}

func (a *authority) hasDescendant(name string) bool {
	for _, n := range Names {
		if strings.HasSuffix(n.Name, "."+name) {
			return true
		}
	}
	return false
}

// forwarder is the firewall's stand-in DNS server until the DNS proxy
// exists: it relays every query, over the transport it came in on, to the
// lab DNS.
type forwarder struct {
	upstream string
}

func (f *forwarder) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	network := "udp"
	if w.LocalAddr().Network() == "tcp" {
		network = "tcp"
	}
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	resp, _, err := c.ExchangeContext(ctx, r, f.upstream)
	if err != nil {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		w.WriteMsg(m)
		return
	}
	w.WriteMsg(resp)
}
