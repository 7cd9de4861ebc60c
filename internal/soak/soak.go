// Package soak is clusterwall's standing attack suite (issue 17): in a lab
// of its own, the real daemon enforces the seed's policy while the
// floods and hostile clients that once hurt it run at the same time as
// normal traffic, for a fixed time. It reports what matters to whoever
// runs the firewall: daemon restarts (must be 0), the normal clients'
// success rate (must stay ≥ 99.9 %), the daemon's peak memory, the
// decision log's bytes, and what each budget turned away.
//
// The mix (all from the cluster side, node and its extra addresses):
//
//   - normal: DNS lookups of the lab's names, HTTPS GETs through the L7
//     proxy (application rule), TCP to a network-rule port — each checked
//     for the right answer;
//   - DNS flood: dnsperf with 400,000 random names (REFUSED upstream: the
//     upstream flaps, the crash of issue 17);
//   - idle connections: 40 addresses of the cluster subnet keep more
//     connections open to the L7 proxy than its global limit, never
//     sending a ClientHello (and redial when the proxy closes them);
//   - denied-flow flood: new TCP connections to a denied port (decision
//     lines, kernel log rate limit);
//   - admin API: bodies of tiny YAML values and alias bombs posted to
//     /v1/validate and /v1/apply.
package soak

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// Options configure a run.
type Options struct {
	Exe      string        // the clusterwall binary (lab servers and the daemon)
	Name     string        // lab name (must not exist); default "cwsoak"
	Policy   string        // default examples/aks-egress.yaml (relative to the module root)
	Duration time.Duration // default 2 minutes
	// ProxyMaxConns is the daemon's proxy.maxConns (default the daemon's,
	// 16,384); the idle attackers hold Attackers × AttackerConns.
	ProxyMaxConns int
	Attackers     int // default 40
	AttackerConns int // per attacker address; default 1.15 × limit / attackers
	// DNSNames is the random-name file's size (default 400,000).
	DNSNames int
	Log      *slog.Logger
}

// Report is a run's outcome.
type Report struct {
	Duration        time.Duration
	Restarts        int // the daemon's process died or changed
	NormalOK        map[string]int64
	NormalFail      map[string]int64
	NormalFailures  []string // the first few failures
	DNSFlood        string   // dnsperf's summary
	IdleConnsHeld   int64    // peak idle attacker connections open
	IdleDials       int64
	DeniedFlows     int64
	AdminBodies     int64
	AdminAnswers    map[int]int64
	PeakRSSKB       int64 // VmHWM of the daemon
	StartRSSKB      int64
	LogBytes        int64                 // decision log files, all of them
	Budgets         map[string][3]float64 // at the end: used, limit, refused
	PeakUsed        map[string]float64    // the most each budget held (sampled every 5 s)
	Panics          map[string]float64
	ProxyMaxConns   int
	Attackers       int
	AttackerConns   int
	NormalPerSecond float64
}

// SuccessRate is the normal clients' share of correct answers.
func (r *Report) SuccessRate() float64 {
	var ok, fail int64
	for _, n := range r.NormalOK {
		ok += n
	}
	for _, n := range r.NormalFail {
		fail += n
	}
	if ok+fail == 0 {
		return 0
	}
	return float64(ok) / float64(ok+fail)
}

// Passed reports whether the run met the bar: no restart, ≥ 99.9 %.
func (r *Report) Passed() bool { return r.Restarts == 0 && r.SuccessRate() >= 0.999 }

// String is the report as docs/benchmarks.md shows it.
func (r *Report) String() string {
	var b strings.Builder
	var ok, fail int64
	for _, k := range []string{"dns", "https", "tcp"} {
		ok += r.NormalOK[k]
		fail += r.NormalFail[k]
	}
	fmt.Fprintf(&b, "soak: %s, lab with the daemon (proxy.maxConns %d)\n", r.Duration.Round(time.Second), r.ProxyMaxConns)
	fmt.Fprintf(&b, "  daemon restarts:        %d\n", r.Restarts)
	fmt.Fprintf(&b, "  normal clients:         %.3f %% of %d answered correctly (%.0f/s)", 100*r.SuccessRate(), ok+fail, r.NormalPerSecond)
	for _, k := range []string{"dns", "https", "tcp"} {
		fmt.Fprintf(&b, "; %s %d/%d", k, r.NormalOK[k], r.NormalOK[k]+r.NormalFail[k])
	}
	fmt.Fprintf(&b, "\n  peak RSS:               %d MB (%d MB at start)\n", r.PeakRSSKB>>10, r.StartRSSKB>>10)
	fmt.Fprintf(&b, "  decision log:           %d MB\n", r.LogBytes>>20)
	fmt.Fprintf(&b, "  DNS flood (dnsperf):    %s\n", r.DNSFlood)
	fmt.Fprintf(&b, "  idle connections:       %d addresses × %d, peak %d open, %d dials\n", r.Attackers, r.AttackerConns, r.IdleConnsHeld, r.IdleDials)
	fmt.Fprintf(&b, "  denied-flow flood:      %d connection attempts\n", r.DeniedFlows)
	fmt.Fprintf(&b, "  admin API bodies:       %d (answers %v)\n", r.AdminBodies, r.AdminAnswers)
	fmt.Fprintf(&b, "  budgets (peak used/limit/refused):")
	for _, name := range sortedKeys(r.Budgets) {
		v := r.Budgets[name]
		fmt.Fprintf(&b, " %s %.0f/%.0f/%.0f;", name, max(v[0], r.PeakUsed[name]), v[1], v[2])
	}
	fmt.Fprintf(&b, "\n  panics recovered:       %v\n", r.Panics)
	for _, f := range r.NormalFailures {
		fmt.Fprintf(&b, "  failure: %s\n", f)
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func (o *Options) defaults() error {
	if o.Name == "" {
		o.Name = "cwsoak"
	}
	if o.Duration <= 0 {
		o.Duration = 2 * time.Minute
	}
	if o.Attackers <= 0 {
		o.Attackers = 40
	}
	limit := o.ProxyMaxConns
	if limit <= 0 {
		limit = 16384
	}
	if o.AttackerConns <= 0 {
		o.AttackerConns = limit*115/100/o.Attackers + 1
	}
	if o.DNSNames <= 0 {
		o.DNSNames = 400_000
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Policy == "" {
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		o.Policy = filepath.Join(root, "examples", "aks-egress.yaml")
	}
	return nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("soak: cannot find the module root (go.mod) for examples/")
		}
	}
}

// Run brings up the lab, runs the mix for o.Duration and removes the lab.
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if lab.Exists(o.Name) {
		return nil, fmt.Errorf("soak: lab %s exists; remove it (clusterwall lab down --name %s)", o.Name, o.Name)
	}
	dir, err := os.MkdirTemp("", "clusterwall-soak-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	conf, err := lab.DaemonConfig(o.Name, lab.DaemonOptions{Policy: o.Policy})
	if err != nil {
		return nil, err
	}
	if o.ProxyMaxConns > 0 {
		conf = fmt.Appendf(conf, "proxy:\n  maxConns: %d\n", o.ProxyMaxConns)
	}
	o.Log.Info("soak: lab up", "name", o.Name)
	l, err := lab.Up(ctx, lab.Config{Name: o.Name, Exe: o.Exe, Log: o.Log,
		Daemon: &lab.DaemonOptions{Policy: o.Policy}, Files: map[string][]byte{lab.DaemonConfigFile: conf}})
	if err != nil {
		return nil, err
	}
	defer func() {
		if derr := lab.Remove(o.Name); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	r := &Run_{o: o, l: l, dir: dir, dialSlots: make(chan struct{}, 32), rep: &Report{NormalOK: map[string]int64{}, NormalFail: map[string]int64{},
		AdminAnswers: map[int]int64{}, ProxyMaxConns: o.ProxyMaxConns, Attackers: o.Attackers, AttackerConns: o.AttackerConns}}
	if r.rep.ProxyMaxConns <= 0 {
		r.rep.ProxyMaxConns = 16384
	}
	return r.run(ctx)
}

// Run_ is one run's state.
type Run_ struct {
	o   Options
	l   *lab.Lab
	dir string
	rep *Report

	mu         sync.Mutex
	okN, failN [3]atomic.Int64 // dns, https, tcp
	idleOpen   atomic.Int64
	idleDials  atomic.Int64
	denied     atomic.Int64
	bodies     atomic.Int64
	peakIdle   atomic.Int64
	admin      sync.Map // code -> *atomic.Int64
	dialSlots  chan struct{}
}

var kinds = [3]string{"dns", "https", "tcp"}

func (r *Run_) result(kind int, err error) {
	if err == nil {
		r.okN[kind].Add(1)
		return
	}
	r.failN[kind].Add(1)
	r.mu.Lock()
	if len(r.rep.NormalFailures) < 10 {
		r.rep.NormalFailures = append(r.rep.NormalFailures, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), kinds[kind], err))
	}
	r.mu.Unlock()
}

func (r *Run_) run(ctx context.Context) (*Report, error) {
	l, o := r.l, r.o
	pid := l.Pid(lab.DaemonProc)
	if pid == 0 {
		return nil, errors.New("soak: no daemon pid")
	}
	r.rep.StartRSSKB = procStatus(pid, "VmRSS")
	// The extra addresses of the idle attackers, on node (its namespace).
	var attackers []netip.Addr
	for i := range o.Attackers {
		a := netip.AddrFrom4([4]byte{10, 42, 1, byte(50 + i)})
		if out, err := l.Exec(ctx, lab.HostNode, "ip", "addr", "add", a.String()+"/24", "dev", "eth0"); err != nil {
			return nil, fmt.Errorf("soak: ip addr add %s in node: %v %s", a, err, out)
		}
		attackers = append(attackers, a)
	}
	names := filepath.Join(r.dir, "names.txt")
	if err := writeNames(names, o.DNSNames); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	// The DNS flood.
	var dnsperfOut []byte
	wg.Go(func() {
		secs := strconv.Itoa(max(1, int(o.Duration.Seconds())-2))
		out, err := l.Exec(ctx, lab.HostNode, "dnsperf", "-s", lab.FWPrivateV4.String(), "-d", names, "-l", secs, "-c", "50", "-q", "500", "-t", "2")
		if err != nil {
			out = append(out, []byte("\ndnsperf: "+err.Error())...)
		}
		dnsperfOut = out
	})
	// Idle connection holders.
	for _, a := range attackers {
		for range o.AttackerConns {
			wg.Go(func() { r.idle(runCtx, a) })
		}
	}
	// Denied-flow flood and admin API abuse.
	for range 4 {
		wg.Go(func() { r.deniedFlood(runCtx) })
	}
	wg.Go(func() { r.adminAbuse(runCtx) })
	// Normal clients.
	for i := range 3 {
		wg.Go(func() { r.normalDNS(runCtx, i) })
		wg.Go(func() { r.normalHTTPS(runCtx) })
		wg.Go(func() { r.normalTCP(runCtx) })
	}
	// Watch the daemon; sample the budgets' fill.
	restarts := 0
	r.rep.PeakUsed = map[string]float64{}
	tick := time.NewTicker(time.Second)
	for n := 0; ; n++ {
		if n%5 == 4 {
			b, _ := r.scrape(runCtx)
			for name, v := range b {
				r.rep.PeakUsed[name] = max(r.rep.PeakUsed[name], v[0])
			}
		}
		select {
		case <-runCtx.Done():
		case <-tick.C:
		}
		if runCtx.Err() != nil {
			break
		}
		if p := l.Pid(lab.DaemonProc); p != pid || !alive(pid) {
			restarts++
			o.Log.Error("soak: the daemon died", "pid", pid)
			break
		}
		if n := r.idleOpen.Load(); n > r.peakIdle.Load() {
			r.peakIdle.Store(n)
		}
	}
	tick.Stop()
	cancel()
	wg.Wait()
	rep := r.rep
	rep.Duration = time.Since(start)
	rep.Restarts = restarts
	if !alive(pid) {
		rep.Restarts = max(rep.Restarts, 1)
	}
	var total int64
	for i, k := range kinds {
		rep.NormalOK[k], rep.NormalFail[k] = r.okN[i].Load(), r.failN[i].Load()
		total += rep.NormalOK[k] + rep.NormalFail[k]
	}
	rep.NormalPerSecond = float64(total) / rep.Duration.Seconds()
	rep.DNSFlood = dnsperfSummary(dnsperfOut)
	rep.IdleConnsHeld, rep.IdleDials = r.peakIdle.Load(), r.idleDials.Load()
	rep.DeniedFlows, rep.AdminBodies = r.denied.Load(), r.bodies.Load()
	r.admin.Range(func(k, v any) bool { rep.AdminAnswers[k.(int)] = v.(*atomic.Int64).Load(); return true })
	if rep.Restarts == 0 {
		rep.PeakRSSKB = procStatus(pid, "VmHWM")
		rep.Budgets, rep.Panics = r.scrape(ctx)
	}
	logs, _ := filepath.Glob(filepath.Join(l.Dir(), "decisions*"))
	for _, f := range logs {
		if fi, err := os.Stat(f); err == nil {
			rep.LogBytes += fi.Size()
		}
	}
	return rep, nil
}

func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie is dead.
	i := bytes.LastIndexByte(data, ')')
	return i > 0 && i+2 < len(data) && data[i+2] != 'Z'
}

// procStatus reads a "kB" field of /proc/PID/status.
func procStatus(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == field {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func writeNames(file string, n int) error {
	rnd := rand.New(rand.NewPCG(17, 17))
	tlds := []string{"com", "net", "org", "io", "example", "test", "xyz", "info", "dev", "cloud"}
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b bytes.Buffer
	for range n {
		k := 6 + rnd.IntN(15)
		for range k {
			b.WriteByte(chars[rnd.IntN(len(chars))])
		}
		t := "A"
		if rnd.IntN(2) == 0 {
			t = "AAAA"
		}
		fmt.Fprintf(&b, ".%s %s\n", tlds[rnd.IntN(len(tlds))], t)
	}
	return os.WriteFile(file, b.Bytes(), 0o644)
}

var reDNSPerf = regexp.MustCompile(`(?m)^\s*(Queries sent|Queries completed|Queries lost|Queries per second|Response codes):\s*(.*)$`)

func dnsperfSummary(out []byte) string {
	var parts []string
	for _, m := range reDNSPerf.FindAllSubmatch(out, -1) {
		parts = append(parts, fmt.Sprintf("%s %s", strings.ToLower(string(m[1])), strings.TrimSpace(string(m[2]))))
	}
	if len(parts) == 0 {
		return strings.TrimSpace(string(out))
	}
	return strings.Join(parts, "; ")
}

// ---- normal clients ----

// normalDNS asks the firewall's DNS proxy for the lab's names from node
// and wants their addresses — as a stub resolver does: 2 s per try, one
// retry (glibc's default is 5 s and two tries).
func (r *Run_) normalDNS(ctx context.Context, i int) {
	c := &dns.Client{Timeout: 2 * time.Second}
	var names []lab.Name
	for _, n := range lab.Names {
		if n.Name != "evil.example.net" { // the seed's threat-intel feed: NXDOMAIN on purpose
			names = append(names, n)
		}
	}
	for n := i; ctx.Err() == nil; n++ {
		name := names[n%len(names)]
		var err error
		r.l.Do(lab.HostNode, func() error {
			m := new(dns.Msg)
			m.SetQuestion(dns.Fqdn(name.Name), dns.TypeA)
			server := netip.AddrPortFrom(lab.FWPrivateV4, 53).String()
			resp, _, e := c.ExchangeContext(context.Background(), m, server)
			if e != nil {
				resp, _, e = c.ExchangeContext(context.Background(), m, server)
			}
			switch {
			case e != nil:
				err = e
			case resp.Rcode != dns.RcodeSuccess || len(resp.Answer) == 0:
				err = fmt.Errorf("%s: %s, %d answers", name.Name, dns.RcodeToString[resp.Rcode], len(resp.Answer))
			case !strings.Contains(resp.Answer[len(resp.Answer)-1].String(), name.V4.String()):
				err = fmt.Errorf("%s: answer %v", name.Name, resp.Answer)
			}
			return nil
		})
		if ctx.Err() != nil && err != nil {
			return // the run ended during the query
		}
		r.result(0, err)
		sleep(ctx, 20*time.Millisecond)
	}
}

// normalHTTPS GETs https://ghcr.io/ through the L7 proxy (an application
// rule of the seed's policy) on a new connection each time.
func (r *Run_) normalHTTPS(ctx context.Context) {
	pool, err := r.l.CAPool()
	if err != nil {
		r.result(1, err)
		return
	}
	dial := r.l.DialContext(lab.HostNode)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		// ghcr.io is 192.0.2.10 in the lab (what the firewall's DNS answers).
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dial(ctx, network, "192.0.2.10:443")
		},
	}}
	for ctx.Err() == nil {
		resp, err := hc.Get("https://ghcr.io/")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ghcr.io" {
				err = fmt.Errorf("https://ghcr.io/: %d %q", resp.StatusCode, body)
			}
		}
		if ctx.Err() != nil && err != nil {
			return
		}
		r.result(1, err)
		sleep(ctx, 50*time.Millisecond)
	}
}

// normalTCP connects to the network rule's port (AzureCloud.eastus TCP
// 9000, whose server writes its name) and reads the answer.
func (r *Run_) normalTCP(ctx context.Context) {
	dial := r.l.DialContext(lab.HostNode)
	for ctx.Err() == nil {
		var err error
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, derr := dial(dctx, "tcp", "198.18.10.5:9000")
		cancel()
		if derr != nil {
			err = derr
		} else {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			data, rerr := io.ReadAll(c)
			c.Close()
			if rerr != nil || !strings.Contains(string(data), "tunnel.eastus.azure.com") {
				err = fmt.Errorf("198.18.10.5:9000: %q %v", data, rerr)
			}
		}
		if ctx.Err() != nil && err != nil {
			return
		}
		r.result(2, err)
		sleep(ctx, 50*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// ---- hostile clients ----

// idle keeps one connection from src to the proxy (ghcr.io:443, redirected
// to it) open without sending anything, and dials again when it closes.
func (r *Run_) idle(ctx context.Context, src netip.Addr) {
	for ctx.Err() == nil {
		var c net.Conn
		select { // at most dialSlots threads in node's namespace at a time
		case r.dialSlots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		r.l.Do(lab.HostNode, func() error {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: 5 * time.Second}
			var err error
			c, err = d.DialContext(ctx, "tcp", "192.0.2.10:443")
			return err
		})
		<-r.dialSlots
		r.idleDials.Add(1)
		if c == nil {
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		r.idleOpen.Add(1)
		done := make(chan struct{})
		go func() {
			select {
			case <-ctx.Done():
			case <-done:
			}
			c.Close()
		}()
		io.Copy(io.Discard, c) // until the proxy closes it (hello timeout, shed)
		close(done)
		r.idleOpen.Add(-1)
	}
}

// deniedFlood opens TCP connections to a denied port (the default deny:
// one decision line each, up to the kernel's log rate).
func (r *Run_) deniedFlood(ctx context.Context) {
	dial := r.l.DialContext(lab.HostNode)
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		c, err := dial(dctx, "tcp", fmt.Sprintf("198.18.10.5:%d", 10000+rand.IntN(1000)))
		cancel()
		if err == nil {
			c.Close()
		}
		r.denied.Add(1)
	}
}

// adminAbuse posts bodies that used to amplify to gigabytes.
func (r *Run_) adminAbuse(ctx context.Context) {
	flow := []byte("name: x\nipGroups:\n  g: [" + strings.Repeat("a,", 4<<20) + "a]\n")
	bomb := []byte("a: &a [x,x,x,x,x,x,x,x,x,x]\n")
	for i, prev := 1, "a"; i < 8; i++ {
		name := string(rune('a' + i))
		bomb = fmt.Appendf(bomb, "%s: &%s [%s]\n", name, name, strings.TrimSuffix(strings.Repeat("*"+prev+",", 10), ","))
		prev = name
	}
	bomb = append(bomb, "name: x\nipGroups: {x: *h}\n"...)
	hc := r.l.AdminClient()
	for i := 0; ctx.Err() == nil; i++ {
		path, body := "/v1/validate", flow
		if i%2 == 1 {
			path, body = "/v1/apply", bomb
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+lab.DaemonAdmin+path, bytes.NewReader(body))
		resp, err := hc.Do(req)
		code := 0
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			code = resp.StatusCode
		}
		r.bodies.Add(1)
		v, _ := r.admin.LoadOrStore(code, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		sleep(ctx, time.Second)
	}
}

// scrape reads the budgets and the recovered panics from /metrics.
func (r *Run_) scrape(ctx context.Context) (map[string][3]float64, map[string]float64) {
	budgets, panics := map[string][3]float64{}, map[string]float64{}
	code, body, err := r.l.Admin(ctx, http.MethodGet, "/metrics")
	if err != nil || code != 200 {
		return budgets, panics
	}
	re := regexp.MustCompile(`^clusterwall_(budget_used|budget_limit|budget_refused_total|panics_recovered_total)\{(budget|where)="([^"]+)"\} (\S+)$`)
	for _, line := range strings.Split(string(body), "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[4], 64)
		if m[1] == "panics_recovered_total" {
			if v > 0 {
				panics[m[3]] = v
			}
			continue
		}
		b := budgets[m[3]]
		b[map[string]int{"budget_used": 0, "budget_limit": 1, "budget_refused_total": 2}[m[1]]] = v
		budgets[m[3]] = b
	}
	return budgets, panics
}
