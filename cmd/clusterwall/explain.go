package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

func explainCommands() []*cobra.Command {
	var (
		policyFile, tagsFile, configFile, src, dst, proto, scheme, from string
		port                                                            int
		resolve                                                         []string
		asJSON                                                          bool
	)
	cmd := &cobra.Command{
		Use:   "explain --policy FILE | --config FILE --src IP --dst IP|NAME [--from inside|outside] [--proto tcp|udp|icmp] [--port N] [--scheme http|https]",
		Short: "Explain the decision for one flow: action, rule kind, group, collection, rule and why",
		Long: `Explain asks the same compiled matcher the data plane is compiled from and
prints the decision the firewall makes for the flow's first packet.

--dst may be an IP address or a name. A name is resolved with --resolve
(name=ip pairs, comma-separated or repeated) or else by the system resolver;
the same answers decide network rules' destinationFqdns and DNAT rules'
translatedFqdn. For TCP, --scheme defaults to https on port 443 and http on
port 80 (application rules apply only to HTTP/HTTPS); --scheme none
evaluates L3/L4 rules only.

--from is the side the flow arrives on: inside (the cluster) or outside
(the internet). DNAT rules translate only flows from the outside, the L7
proxy only sees flows from the inside, and a flow to one of the firewall's
own addresses is decided by its services. Without --from, a flow to a public
IP of the firewall is taken to come from the outside, any other from the
inside. --config (the daemon's config file) gives the firewall's addresses
and services, and the policy when --policy is not given; without it the
public IPs are the destinations of the policy's DNAT rules and the services
are the daemon's defaults.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			gw, cfgPolicy, cfgTags, err := explainGatewayConfig(configFile)
			if err != nil {
				return &exitError{code: 1, msg: "explain: " + err.Error()}
			}
			if policyFile == "" {
				policyFile = cfgPolicy
			}
			if tagsFile == "" {
				tagsFile = cfgTags
			}
			if policyFile == "" || src == "" || dst == "" {
				return &exitError{code: 1, msg: "explain: --policy (or --config), --src and --dst are required"}
			}
			p, err := loadPolicy(policyFile, tagsFile)
			if err != nil {
				return err
			}
			if gw == nil {
				gw = defaultGateway(p)
			}
			res, err := newExplainResolver(resolve)
			if err != nil {
				return &exitError{code: 1, msg: "explain: " + err.Error()}
			}
			flow, note, err := explainFlow(src, dst, proto, port, scheme, res)
			if err != nil {
				return &exitError{code: 1, msg: "explain: " + err.Error()}
			}
			fromNote, err := explainSide(&flow, from, gw)
			if err != nil {
				return &exitError{code: 1, msg: "explain: " + err.Error()}
			}
			ti, err := explainThreatIntel(p, cmd.ErrOrStderr())
			if err != nil {
				return &exitError{code: 1, msg: "explain: " + err.Error()}
			}
			m, err := match.Compile(p, match.Options{Resolver: res, ThreatIntel: ti, Gateway: gw})
			if err != nil {
				return &exitError{code: 1, msg: "explain: " + err.Error()}
			}
			d := m.Decide(flow)
			out := newExplanation(flow, dst, d)
			if d.ThreatIntel != policy.ActionInvalid {
				out.ThreatIntel, out.ThreatDescription = d.ThreatIntel.String(), d.ThreatDescription
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			var notes []string
			for _, n := range []string{note, fromNote} {
				if n != "" {
					notes = append(notes, n)
				}
			}
			if d.Path == match.PathFirewall && configFile == "" {
				notes = append(notes, "the firewall's services are the daemon's defaults (ICMP, DNS from the inside, the L7 proxy's port); --config FILE gives the running ones")
			}
			printExplanation(cmd.OutOrStdout(), out, d, notes, gw)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&policyFile, "policy", "", "policy file (YAML; default: the --config file's policy)")
	f.StringVar(&configFile, "config", "", "the daemon's config file: the firewall's addresses and services (and its policy)")
	f.StringVar(&from, "from", "", "the side the flow arrives on: inside or outside (default: outside for a public IP of the firewall, else inside)")
	f.StringVar(&tagsFile, "service-tags", "", "service tags file (overrides the policy's serviceTags)")
	f.StringVar(&src, "src", "", "source IP address")
	f.StringVar(&dst, "dst", "", "destination IP address or name")
	f.StringVar(&proto, "proto", "tcp", "protocol: tcp, udp or icmp")
	f.IntVar(&port, "port", 0, "destination port (tcp/udp)")
	f.StringVar(&scheme, "scheme", "", "http, https or none (default: from the port for TCP 80/443)")
	f.StringSliceVar(&resolve, "resolve", nil, "DNS answers as name=ip[,name=ip...] (repeatable)")
	f.BoolVar(&asJSON, "json", false, "print the decision as JSON")
	return []*cobra.Command{cmd}
}

// explanation is explain's JSON output; the key names are a contract.
type explanation struct {
	Action              string `json:"action"`
	Kind                string `json:"kind"`
	RuleCollectionGroup string `json:"ruleCollectionGroup"`
	RuleCollection      string `json:"ruleCollection"`
	Rule                string `json:"rule"`
	Reason              string `json:"reason"`
	TranslatedAddress   string `json:"translatedAddress,omitempty"`
	TranslatedPort      int    `json:"translatedPort,omitempty"`
	// The flow as evaluated.
	Source             string `json:"source"`
	Destination        string `json:"destination"`
	DestinationAddress string `json:"destinationAddress,omitempty"`
	Protocol           string `json:"protocol"`
	Port               int    `json:"port,omitempty"`
	Scheme             string `json:"scheme,omitempty"`
	RulePosition       string `json:"rulePosition,omitempty"`
	// From is the side the flow was taken to arrive on ("inside" or
	// "outside"); Path where the firewall decides it: "forward", "proxy"
	// (the L7 proxy) or "firewall" (addressed to the firewall itself, whose
	// Service accepted it, if any).
	From    string `json:"from"`
	Path    string `json:"path"`
	Service string `json:"service,omitempty"`
	// TranslatedFQDN is a DNAT rule's translatedFqdn (TranslatedAddress is
	// then the address it resolves to).
	TranslatedFQDN string `json:"translatedFqdn,omitempty"`
	// BasePolicy names the base policy the deciding rule's group is
	// inherited from (processed before the policy's own groups).
	BasePolicy string `json:"basePolicy,omitempty"`
	// ThreatIntel is "Deny" or "Alert" when threat intelligence listed the
	// flow (before every rule), with the feed entry in ThreatDescription.
	ThreatIntel       string `json:"threatIntel,omitempty"`
	ThreatDescription string `json:"threatDescription,omitempty"`
}

func newExplanation(f match.Flow, dst string, d match.Decision) explanation {
	e := explanation{
		Action:      d.Action.String(),
		Reason:      d.Reason,
		Source:      f.Src.String(),
		Destination: dst,
		Protocol:    f.Proto.String(),
		Port:        int(f.Port),
		From:        f.From.String(),
		Path:        d.Path.String(),
		Service:     d.Service,
	}
	if f.Dst.IsValid() {
		e.DestinationAddress = f.Dst.String()
	}
	if f.Scheme != policy.SchemeNone {
		e.Scheme = strings.ToLower(f.Scheme.String())
	}
	if d.Rule != nil {
		e.Kind = d.Kind.String()
		e.Rule = d.Rule.Name
		e.RuleCollection = d.Rule.Collection.Name
		e.RuleCollectionGroup = d.Rule.Collection.Group.Name
		e.RulePosition = d.Rule.Pos.String()
		if g := d.Rule.Collection.Group; g.Inherited {
			e.BasePolicy = g.Policy
		}
	}
	if d.Action == policy.ActionDNAT {
		e.TranslatedAddress = d.TranslatedAddr.String()
		e.TranslatedFQDN = d.TranslatedFQDN
		e.TranslatedPort = int(d.TranslatedPort)
	}
	return e
}

func printExplanation(w io.Writer, e explanation, d match.Decision, notes []string, gw *match.Gateway) {
	dst := e.Destination
	if e.DestinationAddress != "" && e.DestinationAddress != e.Destination {
		dst += " (" + e.DestinationAddress + ")"
	}
	flow := fmt.Sprintf("%s -> %s %s", e.Source, dst, e.Protocol)
	if e.Port != 0 {
		flow += fmt.Sprintf("/%d", e.Port)
	}
	if e.Scheme != "" {
		flow += " " + e.Scheme
	}
	flow += ", from the " + e.From
	fmt.Fprintf(w, "Flow:    %s\n", flow)
	for _, n := range notes {
		fmt.Fprintf(w, "Note:    %s\n", n)
	}
	fmt.Fprintf(w, "Action:  %s\n", e.Action)
	if e.ThreatIntel != "" {
		fmt.Fprintf(w, "Threat intel: %s (%s)\n", e.ThreatIntel, e.ThreatDescription)
	}
	switch d.Path {
	case match.PathProxy:
		fmt.Fprintf(w, "Path:    the L7 proxy (the kernel redirects TCP from the inside to application rules' ports to it;\n         it decides with the TLS SNI or HTTP Host: network rules, then application rules)\n")
	case match.PathFirewall:
		fmt.Fprintf(w, "Path:    to the firewall itself (not forwarded; DNAT rules would have translated it first)\n")
	}
	if d.Rule == nil && e.Reason == match.ReasonThreatIntel {
		fmt.Fprintf(w, "Reason:  %s (evaluated before every rule)\n", e.Reason)
		return
	}
	if d.Path == match.PathFirewall && d.Rule == nil {
		if e.Service != "" {
			fmt.Fprintf(w, "Service: %s\n", e.Service)
		}
		fmt.Fprintf(w, "Reason:  %s\n", e.Reason)
		return
	}
	if d.Rule == nil {
		fmt.Fprintf(w, "Reason:  %s (default deny)\n", e.Reason)
		return
	}
	c := d.Rule.Collection
	fmt.Fprintf(w, "Kind:    %s rule\n", e.Kind)
	if e.BasePolicy != "" {
		fmt.Fprintf(w, "Group:   %s (priority %d, inherited from base policy %s: processed before the policy's own groups)\n", c.Group.Name, c.Group.Priority, e.BasePolicy)
	} else {
		fmt.Fprintf(w, "Group:   %s (priority %d)\n", c.Group.Name, c.Group.Priority)
	}
	fmt.Fprintf(w, "Collection: %s (priority %d, %s)\n", c.Name, c.Priority, c.Action)
	fmt.Fprintf(w, "Rule:    %s", e.Rule)
	if e.RulePosition != "" {
		fmt.Fprintf(w, " (%s)", e.RulePosition)
	}
	fmt.Fprintln(w)
	if d.Action == policy.ActionDNAT {
		to := net.JoinHostPort(e.TranslatedAddress, fmt.Sprint(e.TranslatedPort))
		if e.TranslatedFQDN != "" {
			to = fmt.Sprintf("%s (%s, the lowest address it resolves to)", to, e.TranslatedFQDN)
		}
		fmt.Fprintf(w, "Translated: %s\n", to)
	}
	fmt.Fprintf(w, "Reason:  %s\n", e.Reason)
}

// explainFlow builds the flow from explain's flags.
func explainFlow(src, dst, proto string, port int, scheme string, res *explainResolver) (match.Flow, string, error) {
	var f match.Flow
	var note string
	s, err := netip.ParseAddr(src)
	if err != nil {
		return f, "", fmt.Errorf("--src %q is not an IP address", src)
	}
	f.Src = s.Unmap()
	p, ok := policy.ParseProto(proto)
	if !ok || p == policy.ProtoAny {
		return f, "", fmt.Errorf("--proto must be tcp, udp or icmp, not %q", proto)
	}
	f.Proto = p
	switch {
	case p == policy.ProtoICMP:
		if port != 0 {
			return f, "", fmt.Errorf("--port does not apply to icmp")
		}
	case port < 1 || port > 65535:
		return f, "", fmt.Errorf("--port must be 1-65535 for %s", strings.ToLower(proto))
	default:
		f.Port = uint16(port)
	}
	if a, err := netip.ParseAddr(dst); err == nil {
		f.Dst = a.Unmap()
	} else {
		name, err := policy.NormalizeFQDN(dst)
		if err != nil {
			return f, "", fmt.Errorf("--dst %q is neither an IP address nor a valid name: %v", dst, err)
		}
		f.Name = name
		addrs := res.lookup(name)
		if len(addrs) == 0 {
			note = fmt.Sprintf("%s did not resolve; only application rules can match it", name)
		} else {
			f.Dst = addrs[0]
			if len(addrs) > 1 {
				note = fmt.Sprintf("%s resolves to %d addresses; explaining the first (%s)", name, len(addrs), addrs[0])
			}
		}
	}
	switch strings.ToLower(scheme) {
	case "":
		if p == policy.ProtoTCP {
			switch f.Port {
			case 443:
				f.Scheme = policy.SchemeHTTPS
			case 80:
				f.Scheme = policy.SchemeHTTP
			}
		}
	case "none":
	default:
		sc, ok := policy.ParseScheme(scheme)
		if !ok {
			return f, "", fmt.Errorf("--scheme must be http, https, mssql or none, not %q", scheme)
		}
		if p != policy.ProtoTCP {
			return f, "", fmt.Errorf("--scheme %s needs --proto tcp", scheme)
		}
		f.Scheme = sc
	}
	return f, note, nil
}

// explainResolver answers from --resolve, then from the system resolver
// (cached). It serves both the --dst name and network rules'
// destinationFqdns, so explain sees the same answers for both.
type explainResolver struct {
	mu     sync.Mutex
	static map[string][]netip.Addr
	cache  map[string][]netip.Addr
}

func newExplainResolver(pairs []string) (*explainResolver, error) {
	r := &explainResolver{static: map[string][]netip.Addr{}, cache: map[string][]netip.Addr{}}
	for _, pair := range pairs {
		name, ip, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("--resolve %q: want name=ip", pair)
		}
		n, err := policy.NormalizeFQDN(name)
		if err != nil {
			return nil, fmt.Errorf("--resolve %q: %v", pair, err)
		}
		a, err := netip.ParseAddr(strings.TrimSpace(ip))
		if err != nil {
			return nil, fmt.Errorf("--resolve %q: %q is not an IP address", pair, ip)
		}
		r.static[n] = append(r.static[n], a.Unmap())
	}
	return r, nil
}

func (r *explainResolver) lookup(name string) []netip.Addr {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if a, ok := r.static[name]; ok {
		return a
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, ok := r.cache[name]; ok {
		return a
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	addrs, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", name)
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	r.cache[name] = addrs
	return addrs
}

// Addrs implements match.AddrLister (DNAT rules' translatedFqdn).
func (r *explainResolver) Addrs(name string) []netip.Addr { return r.lookup(name) }

// Resolved implements match.FQDNResolver.
func (r *explainResolver) Resolved(name string, addr netip.Addr) bool {
	for _, a := range r.lookup(name) {
		if a == addr {
			return true
		}
	}
	return false
}
