package logquery

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// Filter selects records. Zero fields select everything; a list selects a
// record that matches any of its entries.
type Filter struct {
	Since, Until time.Time
	// Actions: Allow, Deny, DNAT, Alert (case-insensitive).
	Actions []string
	// Categories: Azure table names or short names (see ParseCategory).
	Categories []string
	// Sources: the record's SourceIp is inside one of them.
	Sources []netip.Prefix
	// FQDNs: policy FQDN patterns ("*.example.com", "example.com", "*"),
	// matched against Fqdn, or QueryName for DNS queries.
	FQDNs []policy.FQDNPattern
	// Rules: a rule name, "collection/rule" or "group/collection/rule".
	Rules []string
}

// categories maps short names to Azure's table names.
var categories = map[string]string{
	"network": telemetry.CategoryNetworkRule, "application": telemetry.CategoryApplicationRule,
	"app": telemetry.CategoryApplicationRule, "nat": telemetry.CategoryNatRule, "dnat": telemetry.CategoryNatRule,
	"dns": telemetry.CategoryDNSQuery, "threatintel": telemetry.CategoryThreatIntel,
	"threat-intel": telemetry.CategoryThreatIntel, "ti": telemetry.CategoryThreatIntel, "waf": telemetry.CategoryWAF,
}

// ParseCategory accepts Azure's table names (AZFWNetworkRule, ...) in any
// case and the short names network, application (app), nat (dnat), dns,
// threatintel (ti) and waf.
func ParseCategory(s string) (string, error) {
	l := strings.ToLower(s)
	if c, ok := categories[l]; ok {
		return c, nil
	}
	for _, c := range categories {
		if strings.ToLower(c) == l {
			return c, nil
		}
	}
	return "", fmt.Errorf("unknown category %q (AZFWNetworkRule, AZFWApplicationRule, AZFWNatRule, AZFWDnsQuery, AZFWThreatIntel, WAF or network, application, nat, dns, threatintel, waf)", s)
}

// ParseSource parses an IP or a CIDR.
func ParseSource(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseSince parses "1h", "30m", "7d", "2w" (durations back from now) or
// an RFC 3339 time.
func ParseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if n := len(s); n > 1 && (s[n-1] == 'd' || s[n-1] == 'w') {
		if v, err := strconv.ParseFloat(s[:n-1], 64); err == nil && v >= 0 {
			unit := 24 * time.Hour
			if s[n-1] == 'w' {
				unit *= 7
			}
			return now.Add(-time.Duration(v * float64(unit))), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is not a duration (1h, 30m, 7d) or an RFC 3339 time", s)
	}
	return now.Add(-d), nil
}

// Match reports whether the filter selects r.
func (f *Filter) Match(r *telemetry.Record) bool {
	if !f.Since.IsZero() && r.Time.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !r.Time.Before(f.Until) {
		return false
	}
	if len(f.Actions) > 0 && !anyFold(f.Actions, r.Action) {
		return false
	}
	if len(f.Categories) > 0 && !anyFold(f.Categories, r.Category) {
		return false
	}
	if len(f.Sources) > 0 {
		a, err := netip.ParseAddr(r.SourceIp)
		if err != nil {
			return false
		}
		a = a.Unmap()
		ok := false
		for _, p := range f.Sources {
			if p.Contains(a) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(f.FQDNs) > 0 {
		name := RecordName(r)
		if name == "" {
			return false
		}
		ok := false
		for _, p := range f.FQDNs {
			if p.Match(name) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(f.Rules) > 0 {
		ok := false
		for _, want := range f.Rules {
			if ruleMatches(r, want) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// RecordName is the destination name of a record: Fqdn, or the query name
// of a DNS query, without a trailing dot.
func RecordName(r *telemetry.Record) string {
	n := r.Fqdn
	if n == "" {
		n = r.QueryName
	}
	return strings.TrimSuffix(n, ".")
}

func ruleMatches(r *telemetry.Record, want string) bool {
	if r.Rule == "" {
		return false
	}
	switch strings.Count(want, "/") {
	case 0:
		return strings.EqualFold(r.Rule, want)
	case 1:
		return strings.EqualFold(r.RuleCollection+"/"+r.Rule, want)
	}
	return strings.EqualFold(r.RuleCollectionGroup+"/"+r.RuleCollection+"/"+r.Rule, want)
}

func anyFold(list []string, v string) bool {
	for _, s := range list {
		if strings.EqualFold(s, v) {
			return true
		}
	}
	return false
}
