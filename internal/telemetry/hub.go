package telemetry

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Hub keeps what the dashboard shows, in bounded memory: the last N
// decisions, allowed/denied counts per time bucket for the last hour, the
// top denied destinations and the top talkers, and live subscribers. Feed it
// with DecisionLog.Observe(hub.Observe): Observe runs on the data path, takes
// one short lock and never blocks (a slow subscriber loses records and they
// are counted).
type Hub struct {
	opts HubOptions

	mu      sync.Mutex
	ring    []Record
	next    int    // where the next record goes
	total   uint64 // records observed
	buckets []bucket
	denied  topCounter // denied destinations
	talkers topCounter // sources
	rotated int64      // unix seconds of the last tops rotation

	subMu sync.Mutex
	subs  atomic.Pointer[[]*Subscription]
}

// HubOptions size a Hub; zero values take the defaults.
type HubOptions struct {
	// Recent is how many decisions are kept (default 1000).
	Recent int
	// Bucket is the width of a time-series bucket (default 10 s) and
	// Window the span kept (default 1 h).
	Bucket, Window time.Duration
	// TopKeys bounds the keys each top list tracks (default 2048); TopWindow
	// is how long a key's counts last: tops cover the last TopWindow to
	// 2×TopWindow (default 30 min, so about the last hour).
	TopKeys   int
	TopWindow time.Duration
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

type bucket struct {
	start                  int64 // bucket index (unix time / width)
	allowed, denied, other uint64
}

// NewHub makes an empty hub.
func NewHub(o HubOptions) *Hub {
	if o.Recent <= 0 {
		o.Recent = 1000
	}
	if o.Bucket <= 0 {
		o.Bucket = 10 * time.Second
	}
	if o.Window < o.Bucket {
		o.Window = time.Hour
	}
	if o.TopKeys <= 0 {
		o.TopKeys = 2048
	}
	if o.TopWindow <= 0 {
		o.TopWindow = 30 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	n := int(o.Window / o.Bucket)
	h := &Hub{opts: o, ring: make([]Record, 0, o.Recent), buckets: make([]bucket, n)}
	for i := range h.buckets {
		h.buckets[i].start = -1
	}
	h.denied.init(o.TopKeys)
	h.talkers.init(o.TopKeys)
	h.rotated = o.Now().Unix()
	return h
}

// IsDenied reports whether an action means the traffic was stopped: Deny
// (network, application, DNS, threat intel), Drop, or Blocked (WAF).
func IsDenied(action string) bool {
	switch action {
	case "Deny", "Drop", "Blocked":
		return true
	}
	return false
}

// IsAllowed reports whether an action let the traffic through (Allow,
// DNAT, and the alert-only actions Alert and Detected).
func IsAllowed(action string) bool {
	switch action {
	case "Allow", "DNAT", "Alert", "Detected":
		return true
	}
	return false
}

// Destination is how the dashboard names where a record went: the FQDN,
// else the DNS query name, else address:port.
func Destination(r *Record) string {
	switch {
	case r.Fqdn != "":
		return r.Fqdn
	case r.QueryName != "":
		return strings.TrimSuffix(r.QueryName, ".")
	case r.Hostname != "":
		return r.Hostname
	case r.DestinationIp != "" && r.DestinationPort != 0:
		if strings.Contains(r.DestinationIp, ":") {
			return "[" + r.DestinationIp + "]:" + strconv.Itoa(r.DestinationPort)
		}
		return r.DestinationIp + ":" + strconv.Itoa(r.DestinationPort)
	}
	return r.DestinationIp
}

// Observe records r. It is meant for DecisionLog.Observe: cheap, never
// blocking.
func (h *Hub) Observe(r *Record) {
	now := h.opts.Now()
	denied := IsDenied(r.Action)
	h.mu.Lock()
	if len(h.ring) < cap(h.ring) {
		h.ring = append(h.ring, *r)
	} else {
		h.ring[h.next] = *r
	}
	h.next = (h.next + 1) % cap(h.ring)
	h.total++

	t := r.Time
	if t.IsZero() || t.After(now) {
		t = now
	}
	width := int64(h.opts.Bucket)
	idx := t.UnixNano() / width
	b := &h.buckets[idx%int64(len(h.buckets))]
	if b.start < idx {
		*b = bucket{start: idx}
	}
	if b.start == idx {
		switch {
		case denied:
			b.denied++
		case IsAllowed(r.Action):
			b.allowed++
		default:
			b.other++
		}
	}

	if now.Unix()-h.rotated >= int64(h.opts.TopWindow/time.Second) {
		h.denied.rotate()
		h.talkers.rotate()
		h.rotated = now.Unix()
	}
	if denied {
		if d := Destination(r); d != "" {
			h.denied.add(d, true)
		}
	}
	if r.SourceIp != "" {
		h.talkers.add(r.SourceIp, denied)
	}
	h.mu.Unlock()

	if subs := h.subs.Load(); subs != nil {
		for _, s := range *subs {
			select {
			case s.c <- *r:
			default:
				s.dropped.Add(1)
			}
		}
	}
}

// Recent returns up to limit of the newest records that f accepts, newest
// first.
func (h *Hub) Recent(limit int, f Filter) []Record {
	if limit <= 0 {
		limit = 100
	}
	f.Prepare()
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Record, 0, min(limit, len(h.ring)))
	n := len(h.ring)
	for i := 1; i <= n && len(out) < limit; i++ {
		r := &h.ring[(h.next-i+n*2)%n]
		if f.Match(r) {
			out = append(out, *r)
		}
	}
	return out
}

// Point is one time-series bucket.
type Point struct {
	Time    time.Time `json:"time"`
	Allowed uint64    `json:"allowed"`
	Denied  uint64    `json:"denied"`
	// Other counts records without an allow/deny action (answered DNS
	// queries).
	Other uint64 `json:"other"`
}

// TopEntry is one key of a top list.
type TopEntry struct {
	Key    string `json:"key"`
	Count  uint64 `json:"count"`
	Denied uint64 `json:"denied"`
}

// Overview is what the dashboard's first page shows.
type Overview struct {
	BucketSeconds  int        `json:"bucketSeconds"`
	Series         []Point    `json:"series"`
	Allowed        uint64     `json:"allowed"` // sums over the series
	Denied         uint64     `json:"denied"`
	Other          uint64     `json:"other"`
	TopDenied      []TopEntry `json:"topDenied"`
	TopTalkers     []TopEntry `json:"topTalkers"`
	Observed       uint64     `json:"observed"` // records since start
	StreamsDropped uint64     `json:"streamsDropped"`
}

// Overview returns the time series (oldest first, every bucket of the
// window, zeros included) and the top n entries of each list.
func (h *Hub) Overview(n int) Overview {
	if n <= 0 {
		n = 10
	}
	now := h.opts.Now()
	width := int64(h.opts.Bucket)
	last := now.UnixNano() / width
	nb := int64(len(h.buckets))
	ov := Overview{BucketSeconds: int(h.opts.Bucket / time.Second), Series: make([]Point, 0, nb)}
	h.mu.Lock()
	for idx := last - nb + 1; idx <= last; idx++ {
		p := Point{Time: time.Unix(0, idx*width).UTC()}
		if b := h.buckets[((idx%nb)+nb)%nb]; b.start == idx {
			p.Allowed, p.Denied, p.Other = b.allowed, b.denied, b.other
		}
		ov.Allowed += p.Allowed
		ov.Denied += p.Denied
		ov.Other += p.Other
		ov.Series = append(ov.Series, p)
	}
	ov.TopDenied = h.denied.top(n, func(e TopEntry) uint64 { return e.Count })
	ov.TopTalkers = h.talkers.top(n, func(e TopEntry) uint64 { return e.Count })
	ov.Observed = h.total
	h.mu.Unlock()
	if subs := h.subs.Load(); subs != nil {
		for _, s := range *subs {
			ov.StreamsDropped += s.dropped.Load()
		}
	}
	return ov
}

// Subscription receives every record observed after Subscribe, until
// Close. When its buffer is full, records are dropped and counted.
type Subscription struct {
	h       *Hub
	c       chan Record
	dropped atomic.Uint64
	once    sync.Once
}

// C delivers the records.
func (s *Subscription) C() <-chan Record { return s.c }

// Dropped counts the records this subscriber missed for being slow.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Subscribe starts a live subscription with a buffer of buf records
// (default 256).
func (h *Hub) Subscribe(buf int) *Subscription {
	if buf <= 0 {
		buf = 256
	}
	s := &Subscription{h: h, c: make(chan Record, buf)}
	h.subMu.Lock()
	defer h.subMu.Unlock()
	var next []*Subscription
	if cur := h.subs.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, s)
	h.subs.Store(&next)
	return s
}

// Close ends the subscription. The channel is not closed (Observe may be
// sending); stop reading it.
func (s *Subscription) Close() {
	s.once.Do(func() {
		h := s.h
		h.subMu.Lock()
		defer h.subMu.Unlock()
		var next []*Subscription
		if cur := h.subs.Load(); cur != nil {
			for _, o := range *cur {
				if o != s {
					next = append(next, o)
				}
			}
		}
		h.subs.Store(&next)
	})
}

// Subscribers returns the number of live subscriptions.
func (h *Hub) Subscribers() int {
	if s := h.subs.Load(); s != nil {
		return len(*s)
	}
	return 0
}

// Filter selects records: all set conditions must hold.
type Filter struct {
	// Action matches the action case-insensitively; "denied" and
	// "allowed" match the groups of IsDenied and IsAllowed.
	Action string
	// Category matches the category case-insensitively.
	Category string
	// Q is a case-insensitive substring of an address, name, rule,
	// collection, group, reason or message.
	Q string
	q string
}

// Prepare readies f for many Match calls (lowers Q once).
func (f *Filter) Prepare() { f.q = strings.ToLower(strings.TrimSpace(f.Q)) }

// Match reports whether r passes f. Call Prepare after setting Q, or Match
// lowers Q on each call.
func (f *Filter) Match(r *Record) bool {
	switch strings.ToLower(f.Action) {
	case "":
	case "denied":
		if !IsDenied(r.Action) {
			return false
		}
	case "allowed":
		if !IsAllowed(r.Action) {
			return false
		}
	default:
		if !strings.EqualFold(f.Action, r.Action) {
			return false
		}
	}
	if f.Category != "" && !strings.EqualFold(f.Category, r.Category) {
		return false
	}
	q := f.q
	if q == "" && f.Q != "" {
		q = strings.ToLower(strings.TrimSpace(f.Q))
	}
	if q == "" {
		return true
	}
	for _, s := range [...]string{r.SourceIp, r.DestinationIp, r.Fqdn, r.QueryName, r.Rule, r.RuleCollection,
		r.RuleCollectionGroup, r.ActionReason, r.ThreatDescription, r.ErrorMessage, r.Policy, r.TranslatedIp,
		r.OriginalDestinationIp, r.ResolvedDestinationIp, r.Protocol, r.Hostname, r.RequestUri, r.CorrelationId} {
		if s != "" && strings.Contains(strings.ToLower(s), q) {
			return true
		}
	}
	if r.DestinationPort != 0 && strconv.Itoa(r.DestinationPort) == q {
		return true
	}
	return false
}

// topCounter counts keys in bounded memory over two generations: cur
// (since the last rotation) and prev (the one before). A full generation
// first forgets its keys seen once, then counts new keys in "(other)".
type topCounter struct {
	max       int
	cur, prev map[string]*topCount
}

type topCount struct{ count, denied uint64 }

const otherKey = "(other)"

func (c *topCounter) init(max int) {
	c.max = max
	c.cur = make(map[string]*topCount)
	c.prev = map[string]*topCount{}
}

func (c *topCounter) rotate() {
	c.prev = c.cur
	c.cur = make(map[string]*topCount, len(c.prev))
}

func (c *topCounter) add(key string, denied bool) {
	e := c.cur[key]
	if e == nil {
		if len(c.cur) >= c.max {
			for k, v := range c.cur {
				if v.count <= 1 && k != otherKey {
					delete(c.cur, k)
				}
			}
		}
		if len(c.cur) >= c.max {
			key = otherKey
			e = c.cur[key]
		}
		if e == nil {
			e = &topCount{}
			c.cur[key] = e
		}
	}
	e.count++
	if denied {
		e.denied++
	}
}

func (c *topCounter) top(n int, by func(TopEntry) uint64) []TopEntry {
	sum := make(map[string]TopEntry, len(c.cur)+len(c.prev))
	for _, m := range [...]map[string]*topCount{c.prev, c.cur} {
		for k, v := range m {
			e := sum[k]
			e.Key = k
			e.Count += v.count
			e.Denied += v.denied
			sum[k] = e
		}
	}
	out := make([]TopEntry, 0, len(sum))
	for _, e := range sum {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b TopEntry) int {
		if c := cmp.Compare(by(b), by(a)); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}
