package controller

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// PublishedPort is one entry of a clusterwall.io/publish annotation.
type PublishedPort struct {
	Public  uint16 // the port on the firewall's public IP
	Service uint16 // the Service's port
}

// ParsePublish parses a clusterwall.io/publish annotation: "80,443" or
// "8080:80" (public port 8080 to service port 80), comma separated.
func ParsePublish(s string) ([]PublishedPort, error) {
	var out []PublishedPort
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		pub, svc, two := strings.Cut(f, ":")
		if !two {
			svc = pub
		}
		p, err1 := strconv.ParseUint(strings.TrimSpace(pub), 10, 16)
		q, err2 := strconv.ParseUint(strings.TrimSpace(svc), 10, 16)
		if err1 != nil || err2 != nil || p == 0 || q == 0 {
			return nil, fmt.Errorf("%q is not a port or PUBLIC:SERVICE port pair", f)
		}
		out = append(out, PublishedPort{Public: uint16(p), Service: uint16(q)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no ports")
	}
	return out, nil
}

// serviceGroup builds the DNAT group of the annotated LoadBalancer
// Services: for every published port, a rule from the firewall's public IP
// to the Service's load-balancer IP. A Service without a load-balancer IP
// yet, with a bad annotation, or taking a public port another Service has
// is not published; its verdict says why.
func (c *Composition) serviceGroup(sd *v1.ServiceDNAT, services []corev1.Service) (policy.WireGroup, bool) {
	prio := int32(DefaultServiceDNATPrio)
	if sd.Priority != nil {
		prio = *sd.Priority
	}
	src := sd.SourceAddresses
	if len(src) == 0 {
		src = []string{"*"}
	}
	var publicIPs []netip.Addr
	for _, s := range sd.PublicIPs {
		if a, err := netip.ParseAddr(s); err == nil {
			publicIPs = append(publicIPs, a.Unmap())
		}
	}
	svcs := make([]corev1.Service, 0, len(services))
	for _, s := range services {
		if _, ok := s.Annotations[v1.AnnotationPublish]; ok {
			svcs = append(svcs, s)
		}
	}
	sort.Slice(svcs, func(i, j int) bool {
		if svcs[i].Namespace != svcs[j].Namespace {
			return svcs[i].Namespace < svcs[j].Namespace
		}
		return svcs[i].Name < svcs[j].Name
	})
	g := policy.WireGroup{Name: ServiceDNATGroup, Priority: int(prio)}
	taken := map[string]types.NamespacedName{}
	for _, s := range svcs {
		key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
		no := func(format string, args ...any) {
			c.Services[key] = ServiceVerdict{Message: "not published: " + fmt.Sprintf(format, args...)}
		}
		if s.DeletionTimestamp != nil {
			continue
		}
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			no("type is %s, not LoadBalancer", s.Spec.Type)
			continue
		}
		ports, err := ParsePublish(s.Annotations[v1.AnnotationPublish])
		if err != nil {
			no("annotation %s: %v", v1.AnnotationPublish, err)
			continue
		}
		pub, err := choosePublicIP(publicIPs, s.Annotations[v1.AnnotationPublicIP])
		if err != nil {
			no("%v", err)
			continue
		}
		var lb netip.Addr
		for _, in := range s.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(in.IP); err == nil && a.Unmap().Is4() == pub.Is4() {
				lb = a.Unmap()
				break
			}
		}
		if !lb.IsValid() {
			no("no %s load-balancer IP in status yet", family(pub))
			continue
		}
		coll := policy.WireCollection{Name: key.String(), Kind: "DNAT", Action: "DNAT", Priority: 100 + len(g.RuleCollections)}
		var problems []string
		for _, pp := range ports {
			var sp *corev1.ServicePort
			for i := range s.Spec.Ports {
				if s.Spec.Ports[i].Port == int32(pp.Service) {
					sp = &s.Spec.Ports[i]
					break
				}
			}
			if sp == nil {
				problems = append(problems, fmt.Sprintf("the Service has no port %d", pp.Service))
				continue
			}
			proto := string(sp.Protocol)
			if proto == "" {
				proto = "TCP"
			}
			if proto != "TCP" && proto != "UDP" {
				problems = append(problems, fmt.Sprintf("port %d: protocol %s cannot be published", pp.Service, proto))
				continue
			}
			slot := fmt.Sprintf("%s %s/%d", pub, proto, pp.Public)
			if other, ok := taken[slot]; ok {
				problems = append(problems, fmt.Sprintf("%s is already published for %s", slot, other))
				continue
			}
			taken[slot] = key
			coll.Rules = append(coll.Rules, policy.WireRule{
				Name:                 fmt.Sprintf("%s-%d", strings.ToLower(proto), pp.Public),
				Protocols:            []string{proto},
				SourceAddresses:      src,
				DestinationAddresses: []string{pub.String()},
				DestinationPorts:     []string{strconv.Itoa(int(pp.Public))},
				TranslatedAddress:    lb.String(),
				TranslatedPort:       strconv.Itoa(int(pp.Service)),
			})
		}
		if len(coll.Rules) == 0 {
			no("%s", strings.Join(problems, "; "))
			continue
		}
		msg := fmt.Sprintf("published on %s: %d port(s) to %s", pub, len(coll.Rules), lb)
		if len(problems) > 0 {
			msg += "; not published: " + strings.Join(problems, "; ")
		}
		c.Services[key] = ServiceVerdict{Published: true, Message: msg}
		g.RuleCollections = append(g.RuleCollections, coll)
	}
	return g, len(g.RuleCollections) > 0
}

func choosePublicIP(ips []netip.Addr, want string) (netip.Addr, error) {
	if len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("the FirewallPolicy's serviceDNAT.publicIPs has no valid address")
	}
	if want == "" {
		return ips[0], nil
	}
	a, err := netip.ParseAddr(want)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("annotation %s: %q is not an IP address", v1.AnnotationPublicIP, want)
	}
	for _, ip := range ips {
		if ip == a.Unmap() {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("annotation %s: %s is not one of serviceDNAT.publicIPs", v1.AnnotationPublicIP, want)
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
