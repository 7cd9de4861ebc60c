package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// logFilter says which decision log lines belong to a check's flow.
type logFilter struct {
	src, dst netip.Addr
	port     int    // destination port; 0 for ICMP
	proto    string // "TCP", "UDP", "ICMP"
	// fqdn, when set, also matches application rule lines (the L7
	// proxy's) from src for this name; those are preferred.
	fqdn string
	// query, when set, makes this a DNS query: the line is the DNS proxy's
	// (AZFWDnsQuery) for this name and type (proto) from src.
	query string
	// threat, when set, makes the line the AZFWThreatIntel one from src:
	// for the name query or fqdn when set, else for dst (and port, proto).
	threat bool
	// waf, when set, makes the line the ingress WAF's (category WAF) for a
	// request from src to this host (waf.go).
	waf string
}

// threatMatch reports whether r is the threat-intel line for the flow.
func (f logFilter) threatMatch(r *telemetry.Record) bool {
	if !f.threat || r.Category != telemetry.CategoryThreatIntel || !sameAddr(r.SourceIp, f.src) {
		return false
	}
	if name := f.query + f.fqdn; name != "" {
		return strings.EqualFold(strings.TrimSuffix(r.Fqdn, "."), name)
	}
	return f.kernelMatch(r)
}

func (f logFilter) zero() bool { return !f.src.IsValid() }

// dnsMatch reports whether r is the DNS proxy's line for the query.
func (f logFilter) dnsMatch(r *telemetry.Record) bool {
	return f.query != "" && r.Category == telemetry.CategoryDNSQuery && sameAddr(r.SourceIp, f.src) &&
		strings.EqualFold(strings.TrimSuffix(r.QueryName, "."), f.query) && strings.EqualFold(r.QueryType, f.proto)
}

// kernelMatch reports whether r is the kernel's (or the DNAT's) line for
// the flow: same source, destination (before DNAT), port and protocol.
func (f logFilter) kernelMatch(r *telemetry.Record) bool {
	return sameAddr(r.SourceIp, f.src) && sameAddr(r.DestinationIp, f.dst) &&
		strings.EqualFold(r.Protocol, f.proto) && (f.port == 0 || r.DestinationPort == f.port)
}

// appMatch reports whether r is an application rule line for the flow.
func (f logFilter) appMatch(r *telemetry.Record) bool {
	return f.fqdn != "" && r.Category == telemetry.CategoryApplicationRule &&
		sameAddr(r.SourceIp, f.src) && strings.EqualFold(strings.TrimSuffix(r.Fqdn, "."), f.fqdn)
}

func sameAddr(s string, a netip.Addr) bool {
	b, err := netip.ParseAddr(s)
	return err == nil && b.Unmap() == a.Unmap()
}

// decisionLog follows the daemon's decision log (JSON lines) from a mark.
type decisionLog struct {
	path string
	off  int64
}

// mark remembers the log's current end: find looks only at lines written
// after it.
func (d *decisionLog) mark() {
	d.off = 0
	if st, err := os.Stat(d.path); err == nil {
		d.off = st.Size()
	}
}

// records returns the complete lines written since the mark.
func (d *decisionLog) records() []telemetry.Record {
	f, err := os.Open(d.path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(d.off, io.SeekStart); err != nil {
		return nil
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil
	}
	return parseRecords(data)
}

// parseRecords parses JSON lines; an incomplete last line (still being
// written) and lines that are not records are skipped.
func parseRecords(data []byte) []telemetry.Record {
	var out []telemetry.Record
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		line := data[:i]
		data = data[i+1:]
		var r telemetry.Record
		if json.Unmarshal(line, &r) == nil && r.Category != "" {
			out = append(out, r)
		}
	}
	return out
}

// pick returns the line that decided the flow: an application rule line
// when there is one (the proxy decided), else the first kernel line.
func pick(recs []telemetry.Record, f logFilter) *telemetry.Record {
	var kernel *telemetry.Record
	for i := range recs {
		if f.waf != "" {
			if f.wafMatch(&recs[i]) {
				return &recs[i]
			}
			continue
		}
		if f.threat {
			if f.threatMatch(&recs[i]) {
				return &recs[i]
			}
			continue
		}
		if f.query != "" {
			if f.dnsMatch(&recs[i]) {
				return &recs[i]
			}
			continue
		}
		if f.appMatch(&recs[i]) {
			return &recs[i]
		}
		if kernel == nil && f.kernelMatch(&recs[i]) {
			kernel = &recs[i]
		}
	}
	return kernel
}

// find waits up to wait for the flow's line (lines are written
// asynchronously, a few milliseconds after the kernel saw the packet).
// With an fqdn filter it keeps looking for the proxy's line until the
// deadline before it settles for the kernel's.
func (d *decisionLog) find(ctx context.Context, f logFilter, wait time.Duration) *telemetry.Record {
	if f.zero() {
		return nil
	}
	deadline := time.Now().Add(wait)
	for {
		r := pick(d.records(), f)
		if r != nil && (f.fqdn == "" || f.appMatch(r) || f.threat) {
			return r
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return r
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// ruleName is the name a check expects for the deciding rule:
// "collection/rule", "default" for the default deny, "dns RCODE" for the
// DNS proxy's answer.
func ruleName(r *telemetry.Record) string {
	if r == nil {
		return ""
	}
	if r.Category == telemetry.CategoryDNSQuery {
		return "dns " + r.ResponseCode
	}
	if r.Category == telemetry.CategoryThreatIntel {
		return "threat intel " + r.Action
	}
	if r.Category == telemetry.CategoryWAF {
		return "WAF " + r.Action
	}
	if r.Rule == "" {
		return "default"
	}
	return r.RuleCollection + "/" + r.Rule
}

// describe is the table's "deciding rule" cell for a log line.
func describe(r *telemetry.Record) string {
	if r == nil {
		return "(no decision logged)"
	}
	if r.Category == telemetry.CategoryDNSQuery {
		return fmt.Sprintf("DNS proxy: %s %s %s", r.ResponseCode, r.QueryType, strings.TrimSuffix(r.QueryName, "."))
	}
	if r.Category == telemetry.CategoryThreatIntel {
		return fmt.Sprintf("%s %s: %s", r.Category, r.Action, r.ThreatDescription)
	}
	if r.Category == telemetry.CategoryWAF {
		return describeWAF(r) // waf.go
	}
	if r.Rule == "" {
		reason := strings.TrimPrefix(r.ActionReason, "Default Action: ")
		if reason == "" {
			return r.Action + " default"
		}
		return fmt.Sprintf("%s default (%s)", r.Action, reason)
	}
	s := fmt.Sprintf("%s %s/%s", r.Action, r.RuleCollection, r.Rule)
	if r.Action == "Deny" && r.ActionReason != "" && r.ActionReason != "rule matched" {
		s += " (" + r.ActionReason + ")"
	}
	if r.TranslatedIp != "" {
		if a, err := netip.ParseAddr(r.TranslatedIp); err == nil {
			s += " → " + netip.AddrPortFrom(a, uint16(r.TranslatedPort)).String()
		} else {
			s += fmt.Sprintf(" → %s:%d", r.TranslatedIp, r.TranslatedPort)
		}
	}
	return s
}
