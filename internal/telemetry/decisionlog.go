// Package telemetry holds clusterwall's decision log: one JSON line per
// decision, with Azure Firewall's structured log table names as the category
// and their field names, so existing queries and habits carry over.
package telemetry

import (
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterwall/clusterwall/internal/recovery"
)

// Categories (Azure's structured log table names).
const (
	CategoryNetworkRule     = "AZFWNetworkRule"
	CategoryApplicationRule = "AZFWApplicationRule"
	CategoryNatRule         = "AZFWNatRule"
	CategoryDNSQuery        = "AZFWDnsQuery"
	CategoryThreatIntel     = "AZFWThreatIntel"
	CategoryWAF             = "WAF"
)

// ReasonPolicyChanged begins the ActionReason of the line logged for an open
// connection that a reload's new policy denies and that is closed for it
// (the L7 proxy's Redecide); the new decision's reason follows.
const ReasonPolicyChanged = "policy changed: open connection closed"

// Record is one decision. Field names follow Azure's AZFW* tables; fields a
// category does not use are omitted.
type Record struct {
	Time                time.Time `json:"time"`
	Category            string    `json:"category"`
	SourceIp            string    `json:"SourceIp,omitempty"`
	SourcePort          int       `json:"SourcePort,omitempty"`
	DestinationIp       string    `json:"DestinationIp,omitempty"`
	DestinationPort     int       `json:"DestinationPort,omitempty"`
	Protocol            string    `json:"Protocol,omitempty"`
	Fqdn                string    `json:"Fqdn,omitempty"`
	Action              string    `json:"Action,omitempty"`
	ActionReason        string    `json:"ActionReason,omitempty"`
	Policy              string    `json:"Policy,omitempty"`
	RuleCollectionGroup string    `json:"RuleCollectionGroup,omitempty"`
	RuleCollection      string    `json:"RuleCollection,omitempty"`
	Rule                string    `json:"Rule,omitempty"`
	TranslatedIp        string    `json:"TranslatedIp,omitempty"`
	TranslatedPort      int       `json:"TranslatedPort,omitempty"`
	// OriginalDestinationIp is the address the client connected to before
	// the kernel steered the connection to the L7 proxy;
	// ResolvedDestinationIp is the address the proxy connected to (one the
	// firewall resolved for Fqdn).
	OriginalDestinationIp string `json:"OriginalDestinationIp,omitempty"`
	ResolvedDestinationIp string `json:"ResolvedDestinationIp,omitempty"`
	// ThreatDescription says which feed entry a threat-intel decision
	// matched (category AZFWThreatIntel).
	ThreatDescription string `json:"ThreatDescription,omitempty"`
	// AZFWDnsQuery fields (category AZFWDnsQuery; SourceIp, SourcePort and
	// Protocol above are shared).
	QueryId             int     `json:"QueryId,omitempty"`
	QueryType           string  `json:"QueryType,omitempty"`
	QueryClass          string  `json:"QueryClass,omitempty"`
	QueryName           string  `json:"QueryName,omitempty"`
	RequestSize         int     `json:"RequestSize,omitempty"`
	DnssecOkBit         bool    `json:"DnssecOkBit,omitempty"`
	EDNS0BufferSize     int     `json:"EDNS0BufferSize,omitempty"`
	ResponseCode        string  `json:"ResponseCode,omitempty"`
	ResponseFlags       string  `json:"ResponseFlags,omitempty"`
	ResponseSize        int     `json:"ResponseSize,omitempty"`
	RequestDurationSecs float64 `json:"RequestDurationSecs,omitempty"`
	ErrorNumber         int     `json:"ErrorNumber,omitempty"`
	ErrorMessage        string  `json:"ErrorMessage,omitempty"`
	// Enforcement point that decided: kernel, proxy, dns, waf.
	Source string `json:"source,omitempty"`
	// WAF fields (category WAF; SourceIp and SourcePort are the client,
	// Action is Blocked or Detected, Policy the WAF policy). Hostname and
	// RequestUri are Application Gateway's AGWFirewallLogs names;
	// CorrelationId is the ID on the client's 403 page and in the
	// X-Correlation-Id header (Application Gateway's TransactionId).
	Hostname      string   `json:"Hostname,omitempty"`
	RequestUri    string   `json:"RequestUri,omitempty"`
	Method        string   `json:"Method,omitempty"`
	RuleIds       []int    `json:"RuleIds,omitempty"`
	Messages      []string `json:"Messages,omitempty"`
	AnomalyScore  int      `json:"AnomalyScore,omitempty"`
	HttpStatus    int      `json:"HttpStatus,omitempty"`
	CorrelationId string   `json:"CorrelationId,omitempty"`
	Listener      string   `json:"Listener,omitempty"`
	Route         string   `json:"Route,omitempty"`
	WafMode       string   `json:"WafMode,omitempty"`
}

// DecisionLog writes records as JSON lines without ever blocking the
// caller: records wait in a bounded queue; when the queue is full or the
// rate limit is exceeded, they are counted as dropped.
type DecisionLog struct {
	queue chan Record
	done  chan struct{}
	rate  float64 // lines per second; 0 means unlimited
	// The rate limit is a token bucket kept as one atomic word (GCRA):
	// tat is the "theoretical arrival time" in Unix nanoseconds — the
	// bucket is full when tat <= now, and each line moves tat on by
	// interval; a line is allowed while tat-now stays within burst
	// intervals. A dropped line costs one atomic load, so the readers of
	// the data path never contend on a lock.
	interval int64 // nanoseconds per line
	window   int64 // (burst-1) * interval
	tat      atomic.Int64
	written  atomic.Uint64
	dropped  atomic.Uint64
	limited  atomic.Uint64
	onWrite  func(Record)
	log      *slog.Logger

	// Lines that producers encoded themselves (Lines): whole batches,
	// bounded like the queue by the lines they hold (batchLines).
	batches    chan *lineBatch
	free       chan *lineBatch
	batchLines atomic.Int64

	// waits and gathers count the writer's waits on the queue (each
	// ended by a producer waking it) and its gathers (sleep and drain).
	waits, gathers atomic.Uint64

	obsMu     sync.Mutex
	observers atomic.Pointer[[]func(*Record)]
}

// Observe registers f to see every record passed to Log — before rate
// limiting and queueing, so counters (metrics) and live streams see every
// decision even when lines are dropped. f runs on the caller's goroutine
// (the data path): it must be cheap, must never block, and must not keep
// the pointer (LogRecord's caller reuses the record).
func (l *DecisionLog) Observe(f func(*Record)) {
	l.obsMu.Lock()
	defer l.obsMu.Unlock()
	var next []func(*Record)
	if cur := l.observers.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, f)
	l.observers.Store(&next)
}

// Options configure a DecisionLog.
type Options struct {
	// Rate is the maximum lines per second (0: unlimited); Burst the bucket size.
	Rate  float64
	Burst int
	// Queue is the bounded queue length (default 4096; 16384 when Rate
	// is 0).
	Queue int
	// OnWrite, if set, sees every written record (metrics, live streams).
	OnWrite func(Record)
	// Logger gets operational messages (a recovered panic); nil discards.
	Logger *slog.Logger
}

// NewDecisionLog starts a writer goroutine writing to w; Close stops it.
func NewDecisionLog(w io.Writer, o Options) *DecisionLog {
	if o.Queue <= 0 {
		o.Queue = 4096
		if o.Rate <= 0 {
			// Every decision logged (the kernel's flow log at line rate):
			// room for 16384 lines, 40 ms of 400,000 flows a second.
			o.Queue = 16384
		}
	}
	if o.Burst <= 0 {
		o.Burst = int(o.Rate)
		if o.Burst < 10 {
			o.Burst = 10
		}
	}
	l := &DecisionLog{queue: make(chan Record, o.Queue), done: make(chan struct{}), rate: o.Rate, onWrite: o.OnWrite, log: o.Logger,
		batches: make(chan *lineBatch, maxBatches), free: make(chan *lineBatch, maxBatches)}
	if o.Rate > 0 {
		l.interval = max(int64(float64(time.Second)/o.Rate), 1)
		l.window = int64(o.Burst-1) * l.interval
	}
	go l.run(w)
	return l
}

func (l *DecisionLog) run(w io.Writer) {
	defer close(l.done)
	// Lines are batched and written whole: a Write never ends inside a
	// line, so a rotating sink (lumberjack) never splits a line across
	// files.
	const batchBytes = 64 << 10
	var buf []byte
	pending := 0
	gathered := 0 // lines taken since the writer woke
	flush := func() {
		if pending == 0 {
			return
		}
		if _, err := w.Write(buf); err != nil {
			l.dropped.Add(uint64(pending))
		} else {
			l.written.Add(uint64(pending))
		}
		buf, pending = buf[:0], 0
	}
	add := func(r *Record) {
		n := len(buf)
		// A record that makes the encoder (or an OnWrite hook) panic is
		// dropped, logged and counted; the next ones are written.
		defer func() {
			if v := recover(); v != nil {
				recovery.Report(l.log, recovery.DecisionLog, v, "category", r.Category)
				buf = buf[:n]
				l.dropped.Add(1)
			}
		}()
		var err error
		buf, err = AppendJSON(buf, r)
		if err != nil {
			buf = buf[:n]
			l.dropped.Add(1)
			return
		}
		pending++
		gathered++
		if l.onWrite != nil {
			l.onWrite(*r)
		}
		if len(buf) >= batchBytes {
			flush()
		}
	}
	addBatch := func(lb *lineBatch) {
		l.batchLines.Add(-int64(lb.lines))
		buf = append(buf, lb.buf...)
		pending += lb.lines
		gathered += lb.lines
		lb.buf, lb.lines = lb.buf[:0], 0
		select {
		case l.free <- lb:
		default:
		}
		if len(buf) >= batchBytes {
			flush()
		}
	}
	// rec is where a record is received: one variable for all of them (a
	// record received into a variable of the loop, whose address add
	// takes, was a heap allocation per record).
	var rec Record
	// The writer wakes for the first record after a quiet spell, then
	// sleeps batchDelay so that the records of that time are written
	// together: under load it wakes at most 1/batchDelay times a second
	// instead of once per record (each wake-up costs the data path
	// scheduler work and context switches — measured as microseconds per
	// DNS query even at 1,000 lines/s). The queue (4096 by default, 16384
	// without a rate limit) holds batchDelay's worth of lines at 40,000
	// (160,000) lines/s; the Lines' bound, four times the queue, 650,000
	// flow lines/s without a rate limit.
	//
	// While records keep coming (the last gather found some), the writer
	// does not wait on the queue at all: it sleeps batchDelay again and
	// takes what came meanwhile, so a producer's send never finds it
	// waiting and never has to wake it (a send to a waiting receiver
	// readies it and wakes an idle thread to run it: a futex wake-up and
	// a thread hand-off on the data path per batch). Only a gather that
	// finds nothing sends it back to wait; a line still waits at most
	// batchDelay (busyBatchDelay when busy).
	closed := false
	delay := batchDelay
	waiting := true // the last gather found nothing: wait for a record
	for !closed {
		gathered = 0
		l.gathers.Add(1)
		if waiting {
			l.waits.Add(1)
			select {
			case r, ok := <-l.queue:
				if !ok {
					closed = true
					break
				}
				rec = r
				add(&rec)
			case lb := <-l.batches:
				addBatch(lb)
			}
		}
		woke := time.Now()
		if !closed {
			time.Sleep(delay)
		}
	drain:
		for {
			select {
			case lb := <-l.batches:
				addBatch(lb)
				continue
			default:
			}
			if closed {
				break drain
			}
			select {
			case r, ok := <-l.queue:
				if !ok {
					closed = true
					continue
				}
				rec = r
				add(&rec)
			default:
				break drain
			}
		}
		flush()
		waiting = gathered == 0
		// Busy (the kernel's flow log at line rate): gather for
		// busyBatchDelay, a quarter of the wake-ups.
		delay = batchDelay
		if float64(gathered) >= busyLinesPerSecond*time.Since(woke).Seconds() {
			delay = busyBatchDelay
		}
	}
	flush()
}

// batchDelay is how long the writer gathers records before writing them
// (it was 10 ms; at 25 ms, with the kernel's 50 ms log flush, the daemon
// spent a third less CPU per logged flow: docs/benchmarks.md). When the
// last gather took lines at busyLinesPerSecond or more, the next one
// lasts busyBatchDelay: with every flow logged, the daemon spent 15 % less
// CPU per flow at 100 ms than at 25 ms, and a quiet log keeps its lines
// at most 25 ms late (TestDecisionLogLatencyAndReload: 80 ms from SYN to
// line, where a fixed 100 ms made it 150).
const (
	batchDelay         = 25 * time.Millisecond
	busyBatchDelay     = 100 * time.Millisecond
	busyLinesPerSecond = 2000
)

// Log queues r. It never blocks.
//
// Log is on the data path (every DNS query, every proxied connection):
// r stays on the caller's stack unless observers are registered (they get
// a pointer to a copy), and a line the rate limit drops costs an atomic
// load.
func (l *DecisionLog) Log(r Record) {
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	if obs := l.observers.Load(); obs != nil {
		notify(*obs, r)
	}
	if !l.allow(r.Time.UnixNano()) {
		l.limited.Add(1)
		return
	}
	select {
	case l.queue <- r:
	default:
		l.dropped.Add(1)
	}
}

// admit stamps r's time if it has none, shows r to the observers and
// applies the rate limit (counting what it refuses): whether r goes on
// to be written.
func (l *DecisionLog) admit(r *Record) bool {
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	if obs := l.observers.Load(); obs != nil {
		for _, f := range *obs {
			f(r)
		}
	}
	if !l.allow(r.Time.UnixNano()) {
		l.limited.Add(1)
		return false
	}
	return true
}

// LogRecord is Log for a record the caller owns and reuses (the kernel's
// flow log builds every line in one buffer): the observers see r itself,
// so nothing is copied to the heap; the queue keeps a copy. It never
// blocks.
func (l *DecisionLog) LogRecord(r *Record) {
	if !l.admit(r) {
		return
	}
	select {
	case l.queue <- *r:
	default:
		l.dropped.Add(1)
	}
}

// notify runs the observers on a copy of r: taking r's address here, not
// in Log, keeps Log's record off the heap when nobody observes.
//
//go:noinline
func notify(obs []func(*Record), r Record) {
	for _, f := range obs {
		f(&r)
	}
}

// allow takes a token from the bucket at time now (Unix nanoseconds).
func (l *DecisionLog) allow(now int64) bool {
	if l.rate <= 0 {
		return true
	}
	for {
		tat := l.tat.Load()
		if tat-now > l.window {
			return false // bucket empty: the common case under load
		}
		next := max(tat, now) + l.interval
		if l.tat.CompareAndSwap(tat, next) {
			return true
		}
	}
}

// Stats returns lines written, dropped (queue full or write error) and
// rate-limited.
func (l *DecisionLog) Stats() (written, dropped, limited uint64) {
	return l.written.Load(), l.dropped.Load(), l.limited.Load()
}

// Close flushes queued records and stops the writer.
func (l *DecisionLog) Close() {
	close(l.queue)
	<-l.done
}

// QueueFill returns the records waiting to be written and the queue's
// bound (a full queue drops lines: Stats' dropped), or, when they fill
// their bound more, the lines producers encoded themselves (Lines) and
// theirs.
func (l *DecisionLog) QueueFill() (waiting, bound int) {
	q, lines := len(l.queue), int(l.batchLines.Load())
	if int64(lines)*int64(cap(l.queue)) > int64(q)*l.linesBound() {
		return lines, int(l.linesBound())
	}
	return q, cap(l.queue)
}

// linesBound is how many lines of Lines may wait for the writer: four
// times the queue (the kernel's flow log at line rate has lines for
// batchDelay to hold; 16,384 × 4 lines of about 330 bytes are 21 MB).
func (l *DecisionLog) linesBound() int64 { return 4 * int64(cap(l.queue)) }

// maxBatches bounds the batches of Lines waiting for the writer.
const maxBatches = 256

// lineBatch is lines a producer encoded, written as they are.
type lineBatch struct {
	buf   []byte
	lines int
}

// Lines gathers the decision lines one goroutine encodes itself (the
// kernel's flow log, with FlowLine) and hands them to the writer a batch
// at a time: the records are not copied through the queue and the writer
// does not encode them. The lines of a batch are written in order, whole,
// like the queue's; a batch the writer has no room for (4 × Options.Queue
// lines, or maxBatches batches, waiting) is dropped and counted as
// dropped, like a record the queue has no room for. A Lines is not safe
// for concurrent use; Flush it before the DecisionLog is closed.
type Lines struct {
	l *DecisionLog
	b *lineBatch
}

// Lines returns an empty Lines writing to l.
func (l *DecisionLog) Lines() *Lines { return &Lines{l: l} }

// Admit is LogRecord up to the queue: the observers see r (before the
// rate limit) and r takes a token. When it returns true, the caller
// appends r's line to Buf (its encoding as AppendJSON writes it) and
// passes the result to Commit, or calls Drop if it cannot encode it. A
// DecisionLog with an OnWrite hook needs the record itself: Admit then
// queues r as LogRecord does and returns false.
func (w *Lines) Admit(r *Record) bool {
	l := w.l
	if !l.admit(r) {
		return false
	}
	if l.onWrite != nil {
		select {
		case l.queue <- *r:
		default:
			l.dropped.Add(1)
		}
		return false
	}
	return true
}

// Buf returns the batch's lines so far, to append one line to.
func (w *Lines) Buf() []byte {
	if w.b == nil {
		select {
		case w.b = <-w.l.free:
		default:
			w.b = &lineBatch{buf: make([]byte, 0, 64<<10)}
		}
	}
	return w.b.buf
}

// Commit takes b, Buf with one more line appended. A batch of 64 KiB is
// handed to the writer at once.
func (w *Lines) Commit(b []byte) {
	w.b.buf = b
	w.b.lines++
	if len(b) >= 64<<10 {
		w.Flush()
	}
}

// Drop counts a line Admit let through that could not be encoded (the
// writer's AppendJSON would have failed too) as dropped.
func (w *Lines) Drop() { w.l.dropped.Add(1) }

// Flush hands the lines committed so far to the writer.
func (w *Lines) Flush() {
	b := w.b
	if b == nil || b.lines == 0 {
		return
	}
	l := w.l
	n := int64(b.lines)
	if l.batchLines.Add(n) <= l.linesBound() {
		select {
		case l.batches <- b:
			w.b = nil
			return
		default:
		}
	}
	l.batchLines.Add(-n)
	l.dropped.Add(uint64(n))
	b.buf, b.lines = b.buf[:0], 0
}
