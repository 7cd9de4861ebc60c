package lab

import (
	"fmt"
	"net/netip"
	"slices"
)

// Status is what `clusterwall lab status` reports.
type Status struct {
	Name     string
	Dir      string
	Hosts    []HostStatus
	Procs    []ProcStatus
	Problems []string // empty when the lab is intact
}

// HostStatus is one host: its namespace and addresses.
type HostStatus struct {
	Host   string
	NS     string
	Exists bool
	Addrs  []netip.Prefix
}

// ProcStatus is one lab process.
type ProcStatus struct {
	Name  string
	Host  string
	Pid   int
	Alive bool
	Log   string
}

// OK reports whether the lab is complete and every process runs.
func (s *Status) OK() bool { return len(s.Problems) == 0 }

// Status checks the lab: every namespace, interface, address, route and
// forwarding switch against the topology, and every recorded process.
func (l *Lab) Status() *Status {
	s := &Status{Name: l.name, Dir: l.dir}
	for _, h := range specFor(l.ha) {
		hs := HostStatus{Host: h.name, NS: l.NS(h.name), Exists: nsExists(l.NS(h.name))}
		for _, i := range h.ifaces {
			if h.name == HostInet && i.name == "names" {
				continue // listed with Names
			}
			hs.Addrs = append(hs.Addrs, i.addrs...)
			hs.Addrs = append(hs.Addrs, i.inbound...)
		}
		s.Hosts = append(s.Hosts, hs)
	}
	s.Problems = checkTopology(l.name, specFor(l.ha))
	recs := l.records()
	for _, want := range []string{RoleInet, RoleStore, RoleAPI} {
		if !slices.ContainsFunc(recs, func(r procRecord) bool { return r.Name == want }) {
			s.Problems = append(s.Problems, fmt.Sprintf("server %s not recorded", want))
		}
	}
	for _, r := range recs {
		ps := ProcStatus{Name: r.Name, Host: r.Host, Pid: r.Pid, Alive: l.alive(r), Log: r.Log}
		if !ps.Alive {
			s.Problems = append(s.Problems, fmt.Sprintf("process %s (pid %d in %s) is not running; see %s", r.Name, r.Pid, r.Host, r.Log))
		}
		s.Procs = append(s.Procs, ps)
	}
	return s
}
