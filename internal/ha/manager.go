package ha

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Options are what the daemon gives its Manager.
type Options struct {
	Log *slog.Logger
	// Local returns this daemon's readiness and policy for the peer API
	// (the Manager fills in Name and Role).
	Local func() PeerInfo
	// PeerHandlers are extra handlers of the peer API (e.g. the DNS
	// proxy's learned names), by pattern such as "POST /ha/v1/fqdn".
	PeerHandlers map[string]http.Handler
	// PollEvery is how often the peer and conntrackd are asked (default 1s).
	PollEvery time.Duration
}

// Manager runs one gateway's HA part: it renders keepalived's and
// conntrackd's configs, supervises both processes (restarting them when
// they die), follows keepalived's transitions through its notify FIFO,
// reads conntrackd's counters, serves the peer API on the sync link and
// asks the peer's.
type Manager struct {
	spec *Spec
	opts Options
	log  *slog.Logger

	mu          sync.Mutex
	instances   map[string]string // keepalived instance -> keepalived state word
	role        string
	roleChanges uint64
	lastChange  time.Time
	transitions map[[2]string]uint64 // (group, state) -> count
	sync        SyncStatus
	lastStats   SyncStats
	syncErrs    uint64
	resyncs     uint64
	peer        PeerStatus
	started     time.Time
	instance    string

	procs *procs // supervisor_linux.go

	cancel context.CancelFunc
	wg     sync.WaitGroup
	srv    *http.Server
}

// NewManager makes a Manager for spec; Start runs it.
func NewManager(spec *Spec, opts Options) *Manager {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Local == nil {
		opts.Local = func() PeerInfo { return PeerInfo{} }
	}
	if opts.PollEvery == 0 {
		opts.PollEvery = time.Second
	}
	var id [8]byte
	rand.Read(id[:])
	return &Manager{
		spec: spec, opts: opts, log: opts.Log.With("component", "ha"), instance: hex.EncodeToString(id[:]),
		instances: map[string]string{}, role: RoleStarting, transitions: map[[2]string]uint64{},
		sync: SyncStatus{Interface: spec.SyncIface, Peer: spec.PeerAddr.String(), State: "unknown"},
		peer: PeerStatus{Address: netip.AddrPortFrom(spec.PeerAddr, spec.APIPort).String()},
	}
}

// Spec is the manager's configuration.
func (m *Manager) Spec() *Spec { return m.spec }

// Start renders the files, cleans up what an earlier run left (its
// processes, stale virtual addresses, conntrackd's lock), starts
// conntrackd and keepalived and the peer API. It returns once both
// processes run; they are restarted when they die, until Stop.
func (m *Manager) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	m.cancel = cancel
	m.started = time.Now()
	if err := m.startProcs(ctx); err != nil { // supervisor_linux.go
		cancel()
		return err
	}
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.servePeerAPI(ctx) }()
	go func() { defer m.wg.Done(); m.poll(ctx) }()
	return nil
}

// Stop ends keepalived first (it hands the addresses over at once, with
// a priority-0 advertisement) and then conntrackd and the peer API.
func (m *Manager) Stop() {
	if m.cancel == nil {
		return
	}
	m.stopProcs()
	m.cancel()
	m.mu.Lock()
	srv := m.srv
	m.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
	m.wg.Wait()
}

// noteInstance records a keepalived transition read from the FIFO.
func (m *Manager) noteInstance(kind, name, state string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if kind == "GROUP" {
		for _, g := range m.spec.Groups {
			if SyncGroupName(g.Name) == name {
				m.transitions[[2]string{g.Name, stateName(state)}]++
			}
		}
		return
	}
	m.instances[name] = state
	m.updateRoleLocked()
}

// groupStateLocked is a group's state from its two instances.
func (m *Manager) groupStateLocked(g Group) string {
	in, out := m.instances[InstanceName(g.Name, false)], m.instances[InstanceName(g.Name, true)]
	switch {
	case in == "" && out == "":
		return "unknown"
	case in == "MASTER" && out == "MASTER":
		return RoleActive
	case in == "FAULT" || out == "FAULT":
		return RoleFault
	case in == "MASTER" || out == "MASTER":
		return RoleActive // a sync group moving: the other instance follows
	case in == "STOP" || out == "STOP":
		return RoleStopped
	}
	return RoleBackup
}

func (m *Manager) updateRoleLocked() {
	role := RoleStarting
	states := map[string]bool{}
	for _, g := range m.spec.Groups {
		states[m.groupStateLocked(g)] = true
	}
	switch {
	case states[RoleActive]:
		role = RoleActive
	case states[RoleFault]:
		role = RoleFault
	case states[RoleStopped]:
		role = RoleStopped
	case states[RoleBackup] && !states["unknown"]:
		role = RoleBackup
	}
	if m.procs != nil && !m.procs.keepalivedRunning() {
		role = RoleStopped
	}
	if role != m.role {
		if m.role != RoleStarting {
			m.roleChanges++
		}
		m.log.Info("HA role", "role", role, "was", m.role)
		m.role = role
		m.lastChange = time.Now()
	}
}

// Role is this gateway's current role.
func (m *Manager) Role() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.role
}

// Transitions returns how often each group entered each state.
func (m *Manager) Transitions() map[[2]string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[[2]string]uint64, len(m.transitions))
	for k, v := range m.transitions {
		out[k] = v
	}
	return out
}

// Status reports the gateway's HA state.
func (m *Manager) Status() Status {
	held := m.held() // supervisor_linux.go
	m.mu.Lock()
	defer m.mu.Unlock()
	m.updateRoleLocked()
	st := Status{
		Name: m.spec.Name, Mode: m.spec.Mode(), Role: m.role, RoleChanges: m.roleChanges, LastRoleChange: m.lastChange,
		Sync: m.sync, Peer: m.peer,
	}
	st.Sync.Errors = m.syncErrs
	st.Sync.Resyncs = m.resyncs
	for _, g := range m.spec.Groups {
		gs := GroupStatus{Name: g.Name, State: m.groupStateLocked(g), Priority: g.Priority, Addresses: []string{}, Held: []string{}}
		for _, p := range append(slices.Clone(g.Inside), g.Public...) {
			gs.Addresses = append(gs.Addresses, p.String())
			if held[p.Addr()] {
				gs.Held = append(gs.Held, p.Addr().String())
			}
		}
		st.Groups = append(st.Groups, gs)
	}
	if m.procs != nil {
		st.Keepalived, st.Conntrackd = m.procs.status()
	}
	if st.Peer.Reachable {
		local := m.opts.Local()
		in := local.PolicySHA256 != "" && local.PolicySHA256 == st.Peer.PolicySHA256
		st.PolicyInSync = &in
	}
	return st
}

// poll asks conntrackd for its counters and the peer for its state.
func (m *Manager) poll(ctx context.Context) {
	client := &http.Client{Timeout: m.opts.PollEvery * 4 / 5, Transport: &http.Transport{
		DialContext:       (&net.Dialer{Timeout: m.opts.PollEvery / 2}).DialContext,
		DisableKeepAlives: true,
	}}
	t := time.NewTicker(m.opts.PollEvery)
	defer t.Stop()
	for {
		m.pollSync(ctx)
		m.pollPeer(ctx, client)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// syncSilence is how long without a message from the peer makes the sync
// "down" (conntrackd's FTFW sends at least a keep-alive every second or so
// while the link works).
const syncSilence = 5 * time.Second

func (m *Manager) pollSync(ctx context.Context) {
	out, err := m.conntrackdCtl(ctx, "-s") // supervisor_linux.go
	now := time.Now()
	m.mu.Lock()
	was := m.sync.State
	defer func() {
		// The sync came back after an outage (the link, or the peer's
		// conntrackd). FTFW retransmits what its resend queue still holds,
		// but not what overflowed it or what a restarted peer lost: ask
		// for a full resynchronisation at once rather than at the next
		// failover.
		back := was == "down" && m.sync.State == "ok"
		role := m.role
		m.mu.Unlock()
		if back {
			m.resync(ctx, role)
		}
	}()
	if err != nil {
		m.sync.State, m.sync.Detail = "down", "conntrackd: "+err.Error()
		return
	}
	st, ok := ParseStats(out)
	if !ok {
		m.sync.State, m.sync.Detail = "unknown", "cannot read conntrackd's statistics"
		return
	}
	prev := m.lastStats
	if st.PacketsReceived < prev.PacketsReceived || st.PacketsSent < prev.PacketsSent {
		prev = SyncStats{} // conntrackd restarted
	}
	// Errors: count what grew since the last poll.
	grew := func(n, o uint64) uint64 {
		if n > o {
			return n - o
		}
		return 0
	}
	m.syncErrs += grew(st.SendErrors, prev.SendErrors) + grew(st.ReceiveErrors, prev.ReceiveErrors) +
		grew(st.Malformed, prev.Malformed) + grew(st.Lost, prev.Lost)
	if st.PacketsReceived > prev.PacketsReceived {
		m.sync.LastReceived = now
	}
	m.lastStats = st
	m.sync.Stats = st
	switch {
	case !m.sync.LastReceived.IsZero() && now.Sub(m.sync.LastReceived) < syncSilence:
		m.sync.State, m.sync.Detail = "ok", ""
	case m.sync.LastReceived.IsZero() && now.Sub(m.started) < syncSilence:
		m.sync.State, m.sync.Detail = "unknown", "waiting for the peer's first sync message"
	case m.sync.LastReceived.IsZero():
		m.sync.State, m.sync.Detail = "down", "no sync message from the peer since conntrackd started"
	default:
		m.sync.State = "down"
		m.sync.Detail = fmt.Sprintf("no sync message from the peer for %s", now.Sub(m.sync.LastReceived).Round(time.Second))
	}
}

// resync asks conntrackd to resynchronise after a sync outage: the
// active gateway sends its flows to the peer (-B), a backup asks the
// active for its own (-n).
func (m *Manager) resync(ctx context.Context, role string) {
	arg := "-n"
	if role == RoleActive {
		arg = "-B"
	}
	if _, err := m.conntrackdCtl(ctx, arg); err != nil {
		m.log.Warn("state sync is back; resync failed", "err", err)
		return
	}
	m.mu.Lock()
	m.resyncs++
	m.mu.Unlock()
	m.log.Info("state sync is back; resynchronised", "role", role, "conntrackd", arg)
}

func (m *Manager) pollPeer(ctx context.Context, client *http.Client) {
	url := "http://" + netip.AddrPortFrom(m.spec.PeerAddr, m.spec.APIPort).String() + "/ha/v1/info"
	var info PeerInfo
	err := func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("peer API: %s", resp.Status)
		}
		return json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&info)
	}()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		m.peer.Reachable, m.peer.Error = false, err.Error()
		return
	}
	m.peer = PeerStatus{Address: m.peer.Address, Reachable: true, LastSeen: time.Now(), PeerInfo: info}
}

// LocalInfo is what the peer API answers.
func (m *Manager) LocalInfo() PeerInfo {
	info := m.opts.Local()
	info.Name = m.spec.Name
	info.Instance = m.instance
	info.Role = m.Role()
	return info
}

// servePeerAPI serves the peer API on the sync address (retrying while
// the address is not up yet). The data plane accepts it from the peer's
// address on the sync interface only.
func (m *Manager) servePeerAPI(ctx context.Context) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ha/v1/info", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(m.LocalInfo())
	})
	for p, h := range m.opts.PeerHandlers {
		mux.Handle(p, h)
	}
	addr := net.JoinHostPort(m.spec.SyncAddr.String(), strconv.Itoa(int(m.spec.APIPort)))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 2 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	m.mu.Lock()
	m.srv = srv
	m.mu.Unlock()
	for ctx.Err() == nil {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			m.log.Warn("peer API: cannot listen yet; retrying", "addr", addr, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
				continue
			}
		}
		m.log.Info("peer API listening", "addr", addr)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Warn("peer API", "err", err)
		}
		return
	}
}
