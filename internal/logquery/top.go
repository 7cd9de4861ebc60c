package logquery

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// TopKeys are the dimensions Top counts by.
var TopKeys = []string{"fqdn", "src", "dst", "rule", "port"}

// Count is one row of Top.
type Count struct {
	Key         string    `json:"key"`
	Count       int       `json:"count"`
	First, Last time.Time `json:"-"`
	// Sources is how many distinct source addresses the key was seen from.
	Sources int `json:"sources"`
}

// Counter counts records by one dimension.
type Counter struct {
	by   string
	rows map[string]*Count
	srcs map[string]map[string]bool
}

// NewCounter counts by fqdn, src, dst, rule or port.
func NewCounter(by string) (*Counter, error) {
	for _, k := range TopKeys {
		if k == by {
			return &Counter{by: by, rows: map[string]*Count{}, srcs: map[string]map[string]bool{}}, nil
		}
	}
	return nil, fmt.Errorf("cannot count by %q (one of %s)", by, strings.Join(TopKeys, ", "))
}

// Key returns the value of r that c counts by ("" when r has none).
func (c *Counter) Key(r *telemetry.Record) string {
	switch c.by {
	case "fqdn":
		return RecordName(r)
	case "src":
		return r.SourceIp
	case "dst":
		if r.DestinationIp != "" {
			return r.DestinationIp
		}
		return r.OriginalDestinationIp
	case "rule":
		if r.Rule == "" {
			if r.ActionReason != "" {
				return "(" + r.ActionReason + ")"
			}
			return ""
		}
		return r.RuleCollectionGroup + "/" + r.RuleCollection + "/" + r.Rule
	case "port":
		if r.DestinationPort == 0 {
			return ""
		}
		p := r.Protocol
		if p == "" {
			p = "?"
		}
		return p + "/" + strconv.Itoa(r.DestinationPort)
	}
	return ""
}

// Add counts r.
func (c *Counter) Add(r *telemetry.Record) {
	k := c.Key(r)
	if k == "" {
		return
	}
	row := c.rows[k]
	if row == nil {
		row = &Count{Key: k, First: r.Time, Last: r.Time}
		c.rows[k] = row
		c.srcs[k] = map[string]bool{}
	}
	row.Count++
	if r.Time.Before(row.First) {
		row.First = r.Time
	}
	if r.Time.After(row.Last) {
		row.Last = r.Time
	}
	if r.SourceIp != "" && !c.srcs[k][r.SourceIp] {
		c.srcs[k][r.SourceIp] = true
		row.Sources++
	}
}

// Top returns the n largest counts (all when n <= 0), largest first, ties
// by key.
func (c *Counter) Top(n int) []Count {
	out := make([]Count, 0, len(c.rows))
	for _, r := range c.rows {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Key < out[j].Key
	})
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

// WriteTop prints counts as a table.
func WriteTop(w io.Writer, by string, rows []Count) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "COUNT\t%s\tSOURCES\tFIRST\tLAST\n", strings.ToUpper(by))
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", r.Count, r.Key, r.Sources, r.First.Local().Format(time.DateTime), r.Last.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

// TableWriter prints records as an aligned table, flushing every Flush
// call (follow mode flushes per poll).
type TableWriter struct {
	tw     *tabwriter.Writer
	header bool
}

// NewTableWriter writes to w.
func NewTableWriter(w io.Writer) *TableWriter {
	return &TableWriter{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
}

// Write adds one record.
func (t *TableWriter) Write(r *telemetry.Record) {
	if !t.header {
		fmt.Fprintln(t.tw, "TIME\tCATEGORY\tACTION\tPROTO\tSOURCE\tDESTINATION\tFQDN\tRULE / REASON")
		t.header = true
	}
	src := joinHostPort(r.SourceIp, r.SourcePort)
	dstIP := r.DestinationIp
	if dstIP == "" {
		dstIP = r.OriginalDestinationIp
	}
	dst := joinHostPort(dstIP, r.DestinationPort)
	if dst == "" && r.DestinationPort != 0 {
		dst = ":" + strconv.Itoa(r.DestinationPort)
	}
	rule := r.Rule
	if rule != "" {
		rule = r.RuleCollectionGroup + "/" + r.RuleCollection + "/" + r.Rule
	}
	if r.ActionReason != "" {
		if rule != "" {
			rule += " — "
		}
		rule += r.ActionReason
	}
	if r.ThreatDescription != "" {
		rule += " [" + r.ThreatDescription + "]"
	}
	if r.TranslatedIp != "" {
		rule += " → " + joinHostPort(r.TranslatedIp, r.TranslatedPort)
	}
	name := RecordName(r)
	if r.QueryType != "" {
		name += " " + r.QueryType
		if r.ResponseCode != "" {
			name += " " + r.ResponseCode
		}
	}
	fmt.Fprintf(t.tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.Local().Format("2006-01-02 15:04:05.000"),
		shortCategory(r.Category), dash(r.Action), dash(r.Protocol), dash(src), dash(dst), dash(name), dash(rule))
}

// Flush writes the buffered rows.
func (t *TableWriter) Flush() error { return t.tw.Flush() }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func joinHostPort(ip string, port int) string {
	if ip == "" {
		return ""
	}
	if port == 0 {
		return ip
	}
	if strings.Contains(ip, ":") {
		return "[" + ip + "]:" + strconv.Itoa(port)
	}
	return ip + ":" + strconv.Itoa(port)
}

func shortCategory(c string) string {
	switch c {
	case telemetry.CategoryNetworkRule:
		return "network"
	case telemetry.CategoryApplicationRule:
		return "application"
	case telemetry.CategoryNatRule:
		return "nat"
	case telemetry.CategoryDNSQuery:
		return "dns"
	case telemetry.CategoryThreatIntel:
		return "threatintel"
	case telemetry.CategoryWAF:
		return "waf"
	}
	return dash(c)
}
