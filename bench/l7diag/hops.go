package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"sort"
	"time"
)

// hops reads a capture taken in the lab's fw namespace during a rate
// measurement (tcpdump -i any -s 140 -w FILE tcp port 8443) and prints
// where each proxied connection's time went: the proxy's own steps (a
// segment in on one side to the matching segment out on the other) and
// the client's and the server's (a segment out to one of them to its
// answer). A client connection and the proxy's upstream connection are
// paired by the ClientHello's random; the proxy is told by the upstream
// side: HAProxy acknowledges the server's SYN-ACK with a bare ACK,
// clusterwall's first segment after it carries the ClientHello.
func hops(path string, server netip.AddrPort) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var gh [24]byte
	if _, err := io.ReadFull(r, gh[:]); err != nil {
		return fmt.Errorf("%s: pcap header: %w", path, err)
	}
	var nano bool
	switch binary.LittleEndian.Uint32(gh[:4]) {
	case 0xa1b2c3d4:
	case 0xa1b23c4d:
		nano = true
	default:
		return fmt.Errorf("%s: not a little-endian pcap file", path)
	}
	var linkOff int
	switch lt := binary.LittleEndian.Uint32(gh[20:24]); lt {
	case 276: // Linux cooked v2 (tcpdump -i any)
		linkOff = 20
	case 113: // Linux cooked v1
		linkOff = 16
	case 1:
		linkOff = 14
	default:
		return fmt.Errorf("%s: link type %d", path, lt)
	}
	// By the peer's address (client, or the proxy's upstream socket), one
	// list per connection: a long run reuses ports, so a SYN towards the
	// server starts a new one.
	conns := map[netip.AddrPort][][]seg{}
	var h [16]byte
	buf := make([]byte, 1<<16)
	for {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break // the end, or a capture cut short by its timeout
			}
			return fmt.Errorf("%s: %w", path, err)
		}
		incl := binary.LittleEndian.Uint32(h[8:12])
		if int(incl) > len(buf) {
			return fmt.Errorf("%s: record of %d bytes", path, incl)
		}
		d := buf[:incl]
		if _, err := io.ReadFull(r, d); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			return fmt.Errorf("%s: %w", path, err)
		}
		frac := time.Duration(binary.LittleEndian.Uint32(h[4:8]))
		if !nano {
			frac *= time.Microsecond
		}
		t := time.Duration(binary.LittleEndian.Uint32(h[0:4]))*time.Second + frac
		if len(d) < linkOff+20 {
			continue
		}
		ip := d[linkOff:]
		if ip[0]>>4 != 4 || ip[9] != 6 {
			continue
		}
		ihl := int(ip[0]&15) * 4
		if len(ip) < ihl+20 {
			continue
		}
		tot := int(binary.BigEndian.Uint16(ip[2:4]))
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), binary.BigEndian.Uint16(ip[ihl:]))
		dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(ip[ihl+2:]))
		tcp := ip[ihl:]
		doff := int(tcp[12]>>4) * 4
		s := seg{t: t, flags: tcp[13], n: tot - ihl - doff}
		if len(tcp) > doff {
			s.data = bytes.Clone(tcp[doff:min(len(tcp), doff+48)])
		}
		var peer netip.AddrPort
		switch {
		case dst == server:
			peer, s.out = src, true
		case src == server:
			peer = dst
		default:
			continue
		}
		cs := conns[peer]
		if len(cs) == 0 || s.out && s.flags&0x12 == 0x02 {
			cs = append(cs, nil)
		}
		cs[len(cs)-1] = append(cs[len(cs)-1], s)
		conns[peer] = cs
	}
	// One side per ClientHello random: the client's (from the node's
	// subnet) and the upstream's.
	type side struct {
		peer netip.AddrPort
		segs []seg
	}
	cli, up := map[[32]byte]side{}, map[[32]byte]side{}
	pair := func(peer netip.AddrPort, ss []seg) {
		syns := 0
		for _, s := range ss {
			if s.flags&0x12 == 0x02 {
				syns++
			}
		}
		i := slices.IndexFunc(ss, func(s seg) bool { return s.out && s.n > 0 })
		if syns != 1 || i < 0 || len(ss[i].data) < 43 || ss[i].data[0] != 0x16 {
			return
		}
		rnd := [32]byte(ss[i].data[11:43])
		if peer.Addr().As4()[0] == 10 {
			cli[rnd] = side{peer, ss}
		} else {
			up[rnd] = side{peer, ss}
		}
	}
	for peer, cs := range conns {
		for _, ss := range cs {
			pair(peer, ss)
		}
	}
	steps := map[string]map[string][]time.Duration{}
	var order []string
	var conn *pairedConn
	var all []*pairedConn
	add := func(kind, name string, d time.Duration) {
		if steps[kind] == nil {
			steps[kind] = map[string][]time.Duration{}
		}
		if !slices.Contains(order, name) {
			order = append(order, name)
		}
		steps[kind][name] = append(steps[kind][name], d)
		conn.steps[name] = d
	}
	for rnd, c := range cli {
		u, ok := up[rnd]
		if !ok {
			continue
		}
		first := func(ss []seg, after time.Duration, pred func(seg) bool) (seg, bool) {
			for _, s := range ss {
				if s.t >= after && pred(s) {
					return s, true
				}
			}
			return seg{}, false
		}
		data := func(out bool) func(seg) bool { return func(s seg) bool { return s.out == out && s.n > 0 } }
		var uOut []seg
		for _, s := range u.segs {
			if s.out {
				uOut = append(uOut, s)
			}
		}
		kind := "clusterwall"
		if len(uOut) > 1 && uOut[1].n == 0 && uOut[1].flags&0x01 == 0 {
			kind = "haproxy"
		}
		cSyn, ok1 := first(c.segs, 0, func(s seg) bool { return s.out && s.flags&0x02 != 0 })
		hello, ok2 := first(c.segs, 0, data(true))
		uSyn, ok3 := first(u.segs, 0, func(s seg) bool { return s.out && s.flags&0x02 != 0 })
		uSynAck, ok4 := first(u.segs, 0, func(s seg) bool { return !s.out && s.flags&0x02 != 0 })
		uHello, ok5 := first(u.segs, 0, data(true))
		flight, ok6 := first(u.segs, 0, data(false))
		flightOut, ok7 := first(c.segs, flight.t, data(false))
		fin, ok8 := first(c.segs, hello.t+1, data(true)) // the client's Finished
		if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7 && ok8) {
			continue
		}
		conn = &pairedConn{start: cSyn.t, kind: kind, steps: map[string]time.Duration{}}
		all = append(all, conn)
		add(kind, "client: SYN in -> ClientHello in", hello.t-cSyn.t)
		add(kind, "proxy: ClientHello in -> upstream SYN out", uSyn.t-hello.t)
		add(kind, "server kernel: SYN out -> SYN-ACK in", uSynAck.t-uSyn.t)
		add(kind, "proxy: SYN-ACK in -> ClientHello out", uHello.t-uSynAck.t)
		add(kind, "server: ClientHello out -> flight in", flight.t-uHello.t)
		add(kind, "proxy: flight in -> out", flightOut.t-flight.t)
		add(kind, "client: flight out -> Finished in", fin.t-flightOut.t)
		if s, ok := first(u.segs, fin.t, data(true)); ok {
			add(kind, "proxy: Finished in -> out", s.t-fin.t)
		}
		lastUp := uOut[len(uOut)-1]
		for _, s := range uOut {
			if s.n > 0 {
				lastUp = s
			}
		}
		if resp, ok := first(u.segs, lastUp.t, data(false)); ok {
			add(kind, "server: request out -> response in", resp.t-lastUp.t)
			if s, ok := first(c.segs, resp.t, data(false)); ok {
				add(kind, "proxy: response in -> out", s.t-resp.t)
			}
		}
		uFin, ok1 := first(u.segs, 0, func(s seg) bool { return !s.out && s.flags&0x01 != 0 })
		cFinOut, ok2 := first(c.segs, 0, func(s seg) bool { return !s.out && s.flags&0x01 != 0 })
		cFin, ok3 := first(c.segs, 0, func(s seg) bool { return s.out && s.flags&0x01 != 0 })
		if ok1 && ok2 {
			add(kind, "proxy: server's FIN in -> FIN out", cFinOut.t-uFin.t)
		}
		if ok2 && ok3 {
			add(kind, "client: FIN out -> client's FIN in", cFin.t-cFinOut.t)
			add(kind, "all: SYN in -> client's FIN in", cFin.t-cSyn.t)
		}
	}
	kinds := make([]string, 0, len(steps))
	for k := range steps {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	fmt.Printf("%-42s", "µs, median [p25–p75]")
	for _, k := range kinds {
		fmt.Printf(" %26s", fmt.Sprintf("%s (%d)", k, len(steps[k]["proxy: ClientHello in -> upstream SYN out"])))
	}
	fmt.Println()
	for _, name := range order {
		fmt.Printf("%-42s", name)
		for _, k := range kinds {
			v := steps[k][name]
			if len(v) == 0 {
				fmt.Printf(" %26s", "-")
				continue
			}
			slices.Sort(v)
			q := func(p float64) int64 { return v[min(len(v)-1, int(p*float64(len(v))))].Microseconds() }
			fmt.Printf(" %26s", fmt.Sprintf("%d [%d–%d]", q(.5), q(.25), q(.75)))
		}
		fmt.Println()
	}
	printWindows(all)
	return nil
}

type pairedConn struct {
	start time.Duration
	kind  string
	steps map[string]time.Duration
}

// printWindows splits the connections into the benchmark's measurements
// (bursts apart by more than 400 ms, or of another proxy: the set-up switches, checks and
// restarts between them) and prints, per measurement, the sum of the
// medians of the proxy's steps and of the client's and server's steps,
// in time order: the lines follow bench/l7's "round N SET-UP" lines, which
// tell set-ups the capture cannot (clusterwall-b, haproxy-b) apart.
func printWindows(all []*pairedConn) {
	slices.SortFunc(all, func(a, b *pairedConn) int { return int(a.start - b.start) })
	fmt.Println("per measurement (time order): set-up, connections, µs: sums of the step medians of the proxy / the client and the server, median of all")
	for i := 0; i < len(all); {
		j := i + 1
		for j < len(all) && all[j].start-all[j-1].start < 400*time.Millisecond && all[j].kind == all[i].kind {
			j++
		}
		w := all[i:j]
		i = j
		if len(w) < 100 {
			continue
		}
		var proxy, peers time.Duration
		med := func(name string) time.Duration {
			var v []time.Duration
			for _, c := range w {
				if d, ok := c.steps[name]; ok {
					v = append(v, d)
				}
			}
			if len(v) == 0 {
				return 0
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		for name := range w[0].steps {
			switch {
			case len(name) > 6 && name[:6] == "proxy:":
				proxy += med(name)
			case len(name) > 7 && (name[:7] == "client:" || name[:7] == "server:"):
				peers += med(name)
			}
		}
		fmt.Printf("  %-12s %5d  %6d / %6d  %6d\n", w[0].kind, len(w), proxy.Microseconds(), peers.Microseconds(), med("all: SYN in -> client's FIN in").Microseconds())
	}
}

type seg struct {
	t     time.Duration
	out   bool // towards the server's address (from the client, or from the proxy upstream)
	flags uint8
	n     int // payload bytes
	data  []byte
}
