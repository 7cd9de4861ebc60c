package controller

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/waf"
)

// WAFPolicy objects: a team's WAF policy, checked against the platform's
// guardrails (FirewallPolicy spec.ingress.wafPolicies) and then by the
// WAF's own validator (internal/waf: the same checks and the same Coraza
// compilation as a WAF config file), and named wafpolicy/NAMESPACE/NAME in
// the WAF document.

// Default guardrails: a team may not weaken the WAF at all.
const (
	defaultMinParanoia    = 1
	defaultMaxInboundAnom = 5
)

// blockingRuleRanges are CRS rules without which nothing is blocked
// (initialization, the blocking evaluations, reporting): removing them is
// turning the WAF off.
var blockingRuleRanges = [][2]int{{900000, 901999}, {949000, 949999}, {959000, 959999}, {980000, 980999}}

// blockingTags name those rules as a whole.
var blockingTags = []string{"OWASP_CRS", "anomaly-evaluation"}

// checkWAFPolicy checks p against guard and the WAF's validator.
func checkWAFPolicy(p *v1.WAFPolicy, guard *v1.WAFGuardrails) *WAFPolicyResult {
	r := &WAFPolicyResult{wire: wafPolicyWire(p)}
	var errs []v1.FieldError
	add := func(field, format string, args ...any) {
		errs = append(errs, v1.FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	allowed := []v1.WAFMode{"Prevention"}
	minPL, maxIn := int32(defaultMinParanoia), int32(defaultMaxInboundAnom)
	var allowExcl, allowRules bool
	if guard != nil {
		if len(guard.AllowedModes) > 0 {
			allowed = guard.AllowedModes
		}
		if guard.MinParanoiaLevel != nil {
			minPL = *guard.MinParanoiaLevel
		}
		if guard.MaxInboundAnomalyThreshold != nil {
			maxIn = *guard.MaxInboundAnomalyThreshold
		}
		allowExcl, allowRules = guard.AllowExclusions, guard.AllowCustomRules
	}
	mode := p.Spec.Mode
	if mode == "" {
		mode = "Prevention"
	}
	if !slices.Contains(allowed, mode) {
		add("spec.mode", "mode %s is not allowed by the FirewallPolicy (allowed: %s)", mode, joinModes(allowed))
	}
	pl := p.Spec.ParanoiaLevel
	if pl == 0 {
		pl = 1
	}
	if pl < minPL {
		add("spec.paranoiaLevel", "paranoia level %d is below the minimum %d the FirewallPolicy sets", pl, minPL)
	}
	in := p.Spec.InboundAnomalyThreshold
	if in == 0 {
		in = 5
	}
	if in > maxIn {
		add("spec.inboundAnomalyThreshold", "inbound anomaly threshold %d is above the maximum %d the FirewallPolicy allows", in, maxIn)
	}
	if len(p.Spec.Exclusions) > 0 && !allowExcl {
		add("spec.exclusions", "the FirewallPolicy does not allow teams exclusions (spec.ingress.wafPolicies.allowExclusions)")
	}
	if !slices.Contains(allowed, "Off") {
		for i, e := range p.Spec.Exclusions {
			if len(e.Targets) > 0 {
				continue // only some variables of the rules
			}
			for j, id := range e.RuleIDs {
				if lo, hi, ok := ruleRange(id); ok && touchesBlocking(lo, hi) {
					add(fmt.Sprintf("spec.exclusions[%d].ruleIds[%d]", i, j),
						"%s removes CRS initialization or blocking evaluation rules, which turns blocking off; the FirewallPolicy does not allow mode Off", id)
				}
			}
			for j, tag := range e.Tags {
				if slices.Contains(blockingTags, tag) {
					add(fmt.Sprintf("spec.exclusions[%d].tags[%d]", i, j),
						"tag %s covers the CRS blocking evaluation rules, which turns blocking off; the FirewallPolicy does not allow mode Off", tag)
				}
			}
		}
	}
	if strings.TrimSpace(p.Spec.CustomRules) != "" && !allowRules {
		add("spec.customRules", "the FirewallPolicy does not allow teams custom rules (spec.ingress.wafPolicies.allowCustomRules)")
	}
	if len(errs) > 0 {
		r.Reason, r.Errors = v1.ReasonGuardrail, errs
		return r
	}
	if err := waf.CheckPolicy(r.wire); err != nil {
		r.Reason, r.Errors = v1.ReasonInvalid, wafPolicyErrors(err)
		return r
	}
	r.Accepted, r.Reason = true, v1.ReasonAccepted
	return r
}

// wafPolicyWire is p in the WAF config's terms.
func wafPolicyWire(p *v1.WAFPolicy) waf.WirePolicy {
	s := p.Spec
	wp := waf.WirePolicy{
		Name:                     "wafpolicy/" + p.Namespace + "/" + p.Name,
		Mode:                     string(s.Mode),
		ParanoiaLevel:            int(s.ParanoiaLevel),
		InboundAnomalyThreshold:  int(s.InboundAnomalyThreshold),
		OutboundAnomalyThreshold: int(s.OutboundAnomalyThreshold),
		RequestBodyLimit:         s.RequestBodyLimit,
		ResponseInspection:       s.ResponseInspection,
		CustomRules:              s.CustomRules,
	}
	for _, e := range s.Exclusions {
		wp.Exclusions = append(wp.Exclusions, waf.WireExclusion{RuleIDs: e.RuleIDs, Tags: e.Tags, Targets: e.Targets, PathPrefix: e.PathPrefix})
	}
	return wp
}

// wafPolicyErrors maps the WAF validator's errors (policy.mode,
// policy.exclusions[0].ruleIds[1]) to the object's fields (spec.mode, ...).
func wafPolicyErrors(err error) []v1.FieldError {
	var list policy.ErrorList
	var one *policy.Error
	switch {
	case errors.As(err, &list):
	case errors.As(err, &one):
		list = policy.ErrorList{one}
	default:
		return []v1.FieldError{{Field: "spec", Message: err.Error()}}
	}
	var out []v1.FieldError
	for _, e := range list {
		field := "spec"
		if rest, ok := strings.CutPrefix(e.Path, "policy."); ok {
			field = "spec." + rest
		}
		msg := e.Msg
		if rest, ok := strings.CutPrefix(msg, e.Path+": "); ok {
			msg = rest
		}
		msg = strings.ReplaceAll(msg, "policy.", "spec.")
		out = append(out, v1.FieldError{Field: field, Message: msg})
	}
	return out
}

func ruleRange(s string) (int, int, bool) {
	lo, hi, found := strings.Cut(strings.TrimSpace(s), "-")
	a, err := strconv.Atoi(lo)
	if err != nil {
		return 0, 0, false
	}
	b := a
	if found {
		if b, err = strconv.Atoi(hi); err != nil {
			return 0, 0, false
		}
	}
	return a, b, true
}

func touchesBlocking(lo, hi int) bool {
	for _, r := range blockingRuleRanges {
		if lo <= r[1] && hi >= r[0] {
			return true
		}
	}
	return false
}

func joinModes(ms []v1.WAFMode) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = string(m)
	}
	return strings.Join(s, ", ")
}
