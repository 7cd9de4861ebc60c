package daemon

import (
	"context"
	"errors"
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nflog"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// The kernel's flow log: every new forwarded flow a rule decides is logged
// by the kernel (NFLOG, one message per flow; internal/nflog reads them in
// batches), and becomes one decision line here. At line rate that is tens
// of thousands of messages a second, so the work per message is kept
// small: the decision a log prefix stands for, and the fields of the line
// that follow from it, are worked out once per prefix and ruleset
// (flowDecision), the line's fixed part included (telemetry.FlowLine);
// address strings are cached, quoted for JSON; the record the observers
// (metrics, dashboard) see is built in one reused Record and, over the
// rate limit, costs an atomic load after they have counted it. A line to
// be written is encoded here, into a batch of lines handed to the writer
// once per kernel batch (telemetry.Lines): the writer only copies it out.
// A rule's last hit is noted once per second per decision (hits.note).

// readNFLOG turns the kernel's log messages into decision lines until ctx
// ends.
func (d *Daemon) readNFLOG(ctx context.Context, r *nflog.Reader) {
	// End the blocked Receive when ctx ends (a goroutine joined before
	// the reader closes).
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-ctx.Done():
			r.SetDeadline(time.Now())
		case <-done:
		}
	})
	defer func() {
		close(done)
		wg.Wait()
		r.Close()
	}()
	fl := newFlowLogger(d)
	var overruns uint64
	for ctx.Err() == nil {
		pkts, _, err := r.Receive()
		if n := r.Overruns(); n != overruns {
			d.log.Warn("the kernel dropped decision log messages: the daemon did not read them fast enough", "times", n-overruns)
			d.kernelOverruns.Add(n - overruns)
			overruns = n
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			d.log.Warn("reading NFLOG", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		d.logPackets(fl, d.cur.Load(), pkts) // recover.go
		fl.flush()
	}
}

// logPacket writes the decision line of one logged packet.
func (d *Daemon) logPacket(st *state, p *nflog.Packet) {
	fl := newFlowLogger(d)
	fl.log(st, p)
	fl.flush()
}

// flowLogger turns logged packets into decision lines; one goroutine
// uses it.
type flowLogger struct {
	d *Daemon
	// decisions caches what each prefix stands for under the ruleset st
	// (cleared when another ruleset is current).
	st        *state
	decisions map[string]*flowDecision
	addrs     map[netip.Addr]flowAddr
	rec       telemetry.Record
	lines     *telemetry.Lines
	clock     telemetry.TimeCache
	flow      telemetry.Flow
}

// flowAddr is an address as a string and as a JSON string.
type flowAddr struct{ str, json string }

// flowDecision is what a log prefix stands for: the decision and the
// fields of its lines that do not depend on the packet.
type flowDecision struct {
	ok   bool // the prefix is one of the ruleset's
	tmpl telemetry.Record
	line *telemetry.FlowLine // nil: the line is encoded by the writer
	// hit is the rule's key in the hit tracker and lastSec the second of
	// the last hit noted there (a rule's last hit is shown to the second).
	hit     hitKey
	hasHit  bool
	lastSec int64
}

func newFlowLogger(d *Daemon) *flowLogger {
	fl := &flowLogger{d: d, decisions: map[string]*flowDecision{}, addrs: map[netip.Addr]flowAddr{}}
	if d.dlog != nil {
		fl.lines = d.dlog.Lines()
	}
	return fl
}

// flush hands the lines of the packets logged so far to the writer.
func (fl *flowLogger) flush() {
	if fl.lines != nil {
		fl.lines.Flush()
	}
}

// Bounds of the caches: beyond them they start afresh.
const (
	maxCachedPrefixes = 1 << 14
	maxCachedAddrs    = 1 << 14
)

func (fl *flowLogger) log(st *state, p *nflog.Packet) {
	if st == nil || st.index == nil {
		return
	}
	if fl.d.logThreatPacket(st, p) { // threatintel.go
		return
	}
	if st != fl.st || len(fl.decisions) > maxCachedPrefixes {
		fl.st = st
		clear(fl.decisions)
	}
	fd := fl.decisions[p.Prefix]
	if fd == nil {
		fd = fl.decision(st, p.Prefix)
		fl.decisions[p.Prefix] = fd
	}
	if !fd.ok {
		return
	}
	src, dst := fl.addr(p.Src), fl.addr(p.Dst)
	r := &fl.rec
	*r = fd.tmpl
	r.Time = p.Time.UTC()
	r.SourceIp = src.str
	r.SourcePort = int(p.SrcPort)
	r.DestinationIp = dst.str
	r.Protocol = protoName(p.Proto)
	if p.Proto == 6 || p.Proto == 17 {
		r.DestinationPort = int(p.DstPort)
	}
	if fd.hasHit {
		if sec := r.Time.Unix(); sec != fd.lastSec {
			fd.lastSec = sec
			fl.d.hits.note(fd.hit, r.Time)
		}
	}
	if fd.line == nil || fl.lines == nil {
		fl.d.dlog.LogRecord(r)
		return
	}
	if !fl.lines.Admit(r) {
		return
	}
	f := &fl.flow
	f.Time, f.SourceIp, f.SourcePort, f.DestinationIp, f.DestinationPort = r.Time, src.json, r.SourcePort, dst.json, r.DestinationPort
	switch p.Proto {
	case 6:
		f.Protocol = jsonTCP
	case 17:
		f.Protocol = jsonUDP
	case 1, 58:
		f.Protocol = jsonICMP
	default:
		f.Protocol = telemetry.Quote(r.Protocol)
	}
	b, err := fd.line.Append(fl.lines.Buf(), &fl.clock, f)
	if err != nil {
		fl.lines.Drop()
		return
	}
	fl.lines.Commit(b)
}

// The protocols' names as JSON strings.
var (
	jsonTCP  = telemetry.Quote(protoName(6))
	jsonUDP  = telemetry.Quote(protoName(17))
	jsonICMP = telemetry.Quote(protoName(1))
)

func (fl *flowLogger) addr(a netip.Addr) flowAddr {
	if s, ok := fl.addrs[a]; ok {
		return s
	}
	if len(fl.addrs) >= maxCachedAddrs {
		clear(fl.addrs)
	}
	str := a.String()
	s := flowAddr{str: str, json: telemetry.Quote(str)}
	fl.addrs[a] = s
	return s
}

// decision works out what prefix stands for under st.
func (fl *flowLogger) decision(st *state, prefix string) *flowDecision {
	ld, ok := st.index.Lookup(prefix)
	if !ok {
		return &flowDecision{}
	}
	pol := st.policy
	if ld.Policy != nil {
		pol = ld.Policy
	}
	rec := telemetry.Record{
		Category: telemetry.CategoryNetworkRule,
		Action:   ld.Action.String(),
		Policy:   pol.Name,
		Source:   "kernel",
	}
	switch {
	case ld.UnknownRuleset:
		rec.Policy = ""
		rec.ActionReason = ReasonUnknownRuleset
	case ld.Input:
		rec.ActionReason = ReasonInputDrop
	case ld.Rule == nil:
		rec.ActionReason = "Default Action: " + match.ReasonNoRuleMatched
	default:
		rec.RuleCollectionGroup = ld.Rule.Collection.Group.Name
		rec.RuleCollection = ld.Rule.Collection.Name
		rec.Rule = ld.Rule.Name
	}
	if ld.Kind == policy.KindDNAT && (ld.Rule != nil || ld.UnknownRuleset) {
		rec.Category = telemetry.CategoryNatRule
		rec.Action = "DNAT"
		if r := ld.Rule; r != nil {
			if r.TranslatedAddress.IsValid() {
				rec.TranslatedIp = r.TranslatedAddress.String()
			} else {
				rec.TranslatedIp = r.TranslatedFQDN
			}
			rec.TranslatedPort = int(r.TranslatedPort)
		}
	}
	fd := &flowDecision{ok: true, tmpl: rec, lastSec: math.MinInt64}
	if line, err := telemetry.NewFlowLine(&rec); err == nil {
		fd.line = line
	}
	if rec.Rule != "" {
		if k := kindOfCategory(rec.Category); k != 0 {
			fd.hit = hitKey{kind: k, group: rec.RuleCollectionGroup, coll: rec.RuleCollection, rule: rec.Rule}
			fd.hasHit = true
		}
	}
	return fd
}
