package ha

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Files of one gateway's HA processes in Spec.RunDir. Every one is per
// instance (pitfall: two keepalived or conntrackd on one machine must not
// share a pid file, lock, control socket or log).
const (
	KeepalivedConf      = "keepalived.conf"
	KeepalivedPid       = "keepalived.pid"
	KeepalivedVRRPPid   = "keepalived-vrrp.pid"
	KeepalivedCheckPid  = "keepalived-check.pid"
	KeepalivedLog       = "keepalived.log"
	KeepalivedFIFO      = "keepalived.fifo"
	ConntrackdConf      = "conntrackd.conf"
	ConntrackdLock      = "conntrackd.lock"
	ConntrackdSocket    = "conntrackd.ctl"
	ConntrackdLog       = "conntrackd.log"
	ConntrackdStdout    = "conntrackd.out"
	ConntrackdPid       = "conntrackd.pid" // written by the supervisor
	NotifyScript        = "notify.sh"
	NotifyLog           = "notify.log"
	CheckScript         = "check.sh"
	defaultKeepalived   = "/usr/sbin/keepalived"
	defaultConntrackd   = "/usr/sbin/conntrackd"
	keepalivedProgName  = "keepalived"
	conntrackdProgName  = "conntrackd"
	instanceInsideSufx  = "_in"
	instanceOutsideSufx = "_out"
)

// Path returns the path of a file of RunDir.
func (s *Spec) Path(file string) string { return filepath.Join(s.RunDir, file) }

// InstanceName is keepalived's name of group g's VRRP instance on the
// inside (outside false) or outside interface; SyncGroupName its sync
// group's (both instances move together).
func InstanceName(g string, outside bool) string {
	if outside {
		return "cw_" + g + instanceOutsideSufx
	}
	return "cw_" + g + instanceInsideSufx
}

// SyncGroupName is the name of group g's keepalived sync group.
func SyncGroupName(g string) string { return "cw_" + g }

// Files renders every file the HA processes need, by name in RunDir.
func (s *Spec) Files() map[string][]byte {
	return map[string][]byte{
		KeepalivedConf: s.KeepalivedConfig(),
		ConntrackdConf: s.ConntrackdConfig(),
		NotifyScript:   s.NotifyScript(),
		CheckScript:    s.CheckScript(),
	}
}

// KeepalivedConfig renders keepalived.conf: for each group a sync group
// of two VRRP instances, one on the inside interface (the nodes' gateway
// addresses) and one on the outside (the public IPs), so that a gateway
// that loses either link gives up both; both track the daemon's
// readiness; transitions run the notify script (conntrackd) and are
// written to the FIFO the daemon reads.
func (s *Spec) KeepalivedConfig() []byte {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Written by clusterwall for gateway %s (%s). Do not edit: the daemon\n", s.Name, s.Mode())
	w("# renders it from its config's ha section on every start.\n\n")
	w("global_defs {\n")
	w("    router_id %s\n", s.Name)
	w("    enable_script_security\n")
	w("    script_user root\n")
	w("    notify_fifo %s\n", s.Path(KeepalivedFIFO))
	w("    vrrp_garp_master_delay 1\n")
	w("    vrrp_garp_master_repeat 3\n")
	w("    vrrp_garp_master_refresh 10\n")
	w("}\n\n")
	w("vrrp_script cw_ready {\n")
	w("    script %q\n", s.Path(CheckScript))
	w("    interval %d\n", int(s.CheckEvery.Seconds()))
	// The check's own HTTP request gives up after CheckEvery (ha check
	// --timeout); the script's timeout leaves room for starting the
	// process on a loaded machine, which took over a second here (a
	// race-detector build with two daemons starting): with timeout =
	// interval keepalived killed checks that would have passed and both
	// gateways sat in FAULT.
	w("    timeout %d\n", int(3*s.CheckEvery.Seconds()))
	w("    fall %d\n", s.CheckFall)
	w("    rise %d\n", s.CheckRise)
	w("}\n")
	version3 := s.Advert%1e9 != 0
	for _, g := range s.Groups {
		w("\nvrrp_sync_group %s {\n", SyncGroupName(g.Name))
		w("    group {\n        %s\n        %s\n    }\n", InstanceName(g.Name, false), InstanceName(g.Name, true))
		for _, st := range []string{"master", "backup", "fault", "stop"} {
			w("    notify_%s \"%s %s %s\"\n", st, s.Path(NotifyScript), st, g.Name)
		}
		w("}\n")
		for _, out := range []bool{false, true} {
			ifc, addrs := s.Inside, g.Inside
			if out {
				ifc, addrs = s.Outside, g.Public
			}
			w("\nvrrp_instance %s {\n", InstanceName(g.Name, out))
			w("    state BACKUP\n")
			w("    interface %s\n", ifc)
			w("    virtual_router_id %d\n", g.VRID)
			w("    priority %d\n", g.Priority)
			if version3 {
				w("    version 3\n")
			}
			w("    advert_int %s\n", advertString(s.Advert))
			if s.NoPreempt {
				w("    nopreempt\n")
			} else if s.PreemptDelay > 0 {
				w("    preempt_delay %s\n", strconv.FormatFloat(s.PreemptDelay.Seconds(), 'f', -1, 64))
			}
			w("    track_script {\n        cw_ready\n    }\n")
			var v4, v6 []netip.Prefix
			for _, p := range addrs {
				if p.Addr().Is4() {
					v4 = append(v4, p)
				} else {
					v6 = append(v6, p)
				}
			}
			w("    virtual_ipaddress {\n")
			for _, p := range v4 {
				w("        %s dev %s\n", p, ifc)
			}
			w("    }\n")
			if len(v6) > 0 {
				// The instance speaks VRRP over IPv4; IPv6 addresses move
				// with it (keepalived sends unsolicited neighbour adverts).
				// IPv4 ones are secondary addresses (the gateway's own is
				// primary), so never a source either.
				w("    virtual_ipaddress_excluded {\n")
				for _, p := range v6 {
					// Deprecated (preferred lifetime 0): it answers, but
					// the gateway never picks it as a source address.
					w("        %s dev %s preferred_lft 0\n", p, ifc)
				}
				w("    }\n")
			}
			w("}\n")
		}
	}
	return []byte(b.String())
}

// ConntrackdConfig renders conntrackd.conf: FTFW (reliable, with
// acknowledgements and resends) over UDP on the dedicated sync link to the
// peer's address; TCP, UDP and ICMP flows; the firewall's own addresses
// ignored, so that only forwarded flows are replicated (conntrackd tests
// a flow's original source and its reply source, the real endpoints: a
// DNAT'd flow's client and backend, an SNAT'd flow's pod and server).
// The backup keeps replicated state in its external cache; becoming
// active commits it to the kernel (NotifyScript).
func (s *Spec) ConntrackdConfig() []byte {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	fam := "IPv4"
	if s.SyncAddr.Is6() {
		fam = "IPv6"
	}
	w("# Written by clusterwall for gateway %s (%s). Do not edit: the daemon\n", s.Name, s.Mode())
	w("# renders it from its config's ha section on every start.\n\n")
	w("Sync {\n")
	w("    Mode FTFW {\n")
	w("        ResendQueueSize 131072\n")
	w("        PurgeTimeout 60\n")
	w("        ACKWindowSize 300\n")
	w("        DisableExternalCache Off\n")
	w("        StartupResync on\n")
	w("    }\n")
	w("    UDP {\n")
	w("        %s_address %s\n", fam, s.SyncAddr)
	w("        %s_Destination_Address %s\n", fam, s.PeerAddr)
	w("        Port %d\n", s.SyncPort)
	w("        Interface %s\n", s.SyncIface)
	w("        SndSocketBuffer 1249280\n")
	w("        RcvSocketBuffer 1249280\n")
	w("        Checksum on\n")
	w("    }\n")
	w("}\n\n")
	w("General {\n")
	w("    Systemd off\n")
	w("    HashSize 32768\n")
	w("    HashLimit 131072\n")
	w("    LogFile %s\n", s.Path(ConntrackdLog))
	w("    Syslog off\n")
	w("    LockFile %s\n", s.Path(ConntrackdLock))
	w("    UNIX {\n        Path %s\n    }\n", s.Path(ConntrackdSocket))
	w("    NetlinkBufferSize 2097152\n")
	w("    NetlinkBufferSizeMaxGrowth 8388608\n")
	w("    NetlinkOverrunResync 5\n")
	w("    Filter From Userspace {\n")
	w("        Protocol Accept {\n            TCP\n            UDP\n            ICMP\n            IPv6-ICMP\n        }\n")
	w("        Address Ignore {\n")
	for _, a := range s.ignored() {
		kind := "IPv4_address"
		if a.Is6() {
			kind = "IPv6_address"
		}
		w("            %s %s\n", kind, a)
	}
	w("        }\n")
	w("    }\n")
	w("}\n")
	return []byte(b.String())
}

// ignored lists the addresses whose flows conntrackd does not replicate:
// the firewall's own (loopback, the sync link's, the groups' and the
// other local ones the daemon names).
func (s *Spec) ignored() []netip.Addr {
	out := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}
	add := func(a netip.Addr) {
		if a.IsValid() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	add(s.SyncAddr)
	add(s.PeerAddr)
	for _, a := range s.Addrs() {
		add(a)
	}
	for _, a := range s.LocalAddrs {
		add(a.Unmap())
	}
	return out
}

// NotifyScript renders the script keepalived runs on a group's
// transitions (`notify.sh STATE GROUP`): the conntrackd steps of the
// conntrack-tools' primary-backup.sh, against this instance's config (and
// so its control socket), never /etc/conntrackd's. Becoming active:
// commit the replicated state to the kernel, flush both caches, resync the
// internal cache with the kernel, and send it all to the peer. Becoming
// backup: shorten the timers of the kernel's (now stale) entries and ask
// the new active for its state. It logs to notify.log in RunDir.
func (s *Spec) NotifyScript() []byte {
	ct := s.Conntrackd
	if ct == "" {
		ct = defaultConntrackd
	}
	purge := "$C -t || echo \"conntrackd -t failed\"\n"
	if len(s.Groups) > 1 {
		// Active/active: this gateway stays active for its other group;
		// shortening every kernel timer would end its idle flows too.
		purge = ": # active/active: no purge (the gateway is still active for another group)\n"
	}
	return []byte(fmt.Sprintf(`#!/bin/sh
# Written by clusterwall for gateway %[1]s: keepalived runs it on a VRRP
# sync group's transitions as "notify.sh STATE GROUP".
exec >>%[2]s 2>&1
C="%[3]s -C %[4]s"
echo "$(date -u +%%Y-%%m-%%dT%%H:%%M:%%S.%%NZ) group $2: $1"
case "$1" in
master)
    $C -c || echo "conntrackd -c (commit) failed"
    $C -f || echo "conntrackd -f (flush) failed"
    $C -R || echo "conntrackd -R (resync with the kernel) failed"
    $C -B || echo "conntrackd -B (bulk send) failed"
    ;;
backup)
    %[5]s    $C -n || echo "conntrackd -n (resync request) failed"
    ;;
fault|stop)
    %[5]s    ;;
esac
exit 0
`, s.Name, s.Path(NotifyLog), ct, s.Path(ConntrackdConf), purge))
}

// CheckScript renders keepalived's track script: the daemon's readiness.
func (s *Spec) CheckScript() []byte {
	var q []string
	for _, a := range s.CheckCommand {
		q = append(q, shellQuote(a))
	}
	cmd := strings.Join(q, " ")
	if cmd == "" {
		cmd = "false"
	}
	return []byte(fmt.Sprintf("#!/bin/sh\n# Written by clusterwall for gateway %s: keepalived's track script (exit 0 while the daemon is ready).\nexec %s\n", s.Name, cmd))
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:=+,@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
