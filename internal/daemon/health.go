package daemon

import (
	"fmt"
	"slices"
	"strings"
)

// Component states in ComponentHealth.
const (
	StateUp       = "up"
	StateDegraded = "degraded" // serving, but part of it is not (e.g. every DNS upstream down)
	StateDown     = "down"     // configured, not serving
	StateOff      = "off"      // not configured
)

// ComponentHealth is one part of the firewall in GET /v1/status
// "components": the kernel data plane, the kernel decision log, the DNS
// proxy, the L7 proxy (transparent and explicit) and the WAF.
type ComponentHealth struct {
	Name   string `json:"name"`
	State  string `json:"state"` // up, degraded, down or off
	Detail string `json:"detail"`
}

// components reports the health of every part of the firewall, in a fixed
// order.
func (d *Daemon) components() []ComponentHealth {
	d.failedMu.Lock()
	failed := map[string]string{}
	for k, v := range d.failed {
		failed[k] = v
	}
	d.failedMu.Unlock()
	var out []ComponentHealth
	add := func(name, state, detail string) {
		if why := failed[name]; why != "" {
			state, detail = StateDown, "stopped serving: "+why
		}
		out = append(out, ComponentHealth{Name: name, State: state, Detail: detail})
	}

	if st := d.cur.Load(); st != nil {
		add("data plane", StateUp, fmt.Sprintf("generation %d, policy %s, %d rules", st.gen, st.policy.Name, countRules(st.policy)))
	} else {
		add("data plane", StateDown, "no policy applied: the kernel is not programmed")
	}

	switch {
	case d.dlog == nil:
		add("kernel decision log", StateOff, "no decision log")
	case d.nflogErr.Load() != nil:
		add("kernel decision log", StateDown, "NFLOG unavailable: "+*d.nflogErr.Load())
	default:
		add("kernel decision log", StateUp, fmt.Sprintf("NFLOG group %d", d.nflogGroup))
	}

	switch u := d.dnsUpstreams(); {
	case d.cfg.DNS.Listen == "":
		add("DNS proxy", StateOff, "dns.listen: off")
	case !u.Enabled:
		add("DNS proxy", StateDown, "not listening on "+d.cfg.DNS.Listen)
	default:
		healthy, down := 0, []string{}
		for _, x := range u.Upstreams {
			if x.Healthy {
				healthy++
			} else {
				down = append(down, x.Addr)
			}
		}
		state, detail := StateUp, fmt.Sprintf("listening on %s; upstreams %d/%d healthy", u.Listen, healthy, len(u.Upstreams))
		if len(down) > 0 {
			detail += " (down: " + strings.Join(down, ", ") + ")"
		}
		if healthy == 0 {
			state = StateDegraded
		}
		add("DNS proxy", state, detail)
	}

	px := d.proxyUp.Load()
	switch {
	case d.cfg.Proxy.Listen == "":
		add("L7 proxy", StateOff, "proxy.listen: off (application rules allow nothing)")
	case px == nil:
		add("L7 proxy", StateDown, "not listening on "+d.cfg.Proxy.Listen)
	default:
		s := px.Stats()
		add("L7 proxy", StateUp, fmt.Sprintf("listening on %s; %d connections open, %d allowed, %d denied, %d cut by reloads",
			d.cfg.Proxy.Listen, s.Active, s.Allowed, s.Denied, s.Cut))
	}
	if d.cfg.Proxy.Explicit != "" {
		if px == nil {
			add("explicit proxy", StateDown, "not listening on "+d.cfg.Proxy.Explicit)
		} else {
			add("explicit proxy", StateUp, "listening on "+d.cfg.Proxy.Explicit)
		}
	}

	switch w := d.WAFStatus(); {
	case d.cfg.WAF.Config == "":
		add("WAF", StateOff, "no waf section")
	case w == nil:
		add("WAF", StateDown, "not started")
	default:
		var ls []string
		for name, a := range w.Listeners {
			ls = append(ls, name+" "+a)
		}
		slices.Sort(ls)
		state := StateUp
		if w.LastReload != "ok" {
			state = StateDegraded // serving the previous configuration
		}
		add("WAF", state, fmt.Sprintf("generation %d, listeners %s; last reload %s", w.Generation, strings.Join(ls, ", "), w.LastReload))
	}
	return out
}
