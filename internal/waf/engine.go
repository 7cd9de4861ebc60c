package waf

import (
	"fmt"
	"strings"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/types"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// CRSVersion is the version of the embedded OWASP Core Rule Set.
const CRSVersion = "4.25.0"

// generatedRuleIDBase is the start of the rule ID range clusterwall uses
// for the rules it generates (path-scoped exclusions). Custom rules must
// not use 9100000-9199999.
const generatedRuleIDBase = 9100000

// argumentsLimit is the number of arguments kept per source (query, path,
// body); a request with more is refused (rules 200004, 200005, 200007).
const argumentsLimit = 1000

// Directives renders a policy as the SecLang Coraza loads, in this order:
// engine settings, the policy's custom rules, the CRS setup, the policy's
// CRS variables (paranoia level, thresholds), path-scoped (run-time)
// exclusions, the CRS rules, and configure-time exclusions. Custom rules
// come before the CRS, as Azure evaluates custom rules before managed ones,
// and so that they can also set CRS variables or ctl actions.
func Directives(p *Policy) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# clusterwall WAF policy %q", p.Name)
	switch p.Mode {
	case ModePrevention:
		w("SecRuleEngine On")
	case ModeDetection:
		w("SecRuleEngine DetectionOnly")
	default:
		w("SecRuleEngine Off")
	}
	// The request body settings and the body-processor rules of Coraza's
	// recommended configuration.
	w("SecRequestBodyAccess On")
	w(`SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" "id:'200000',phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"`)
	w(`SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:'200001',phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"`)
	w(`SecRule REQUEST_HEADERS:Content-Type "^application/[a-z0-9.-]+[+]json" "id:'200006',phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"`)
	w("SecRequestBodyJsonDepthLimit 1024")
	w("SecRequestBodyLimit %d", p.RequestBodyLimit)
	w("SecRequestBodyInMemoryLimit %d", p.RequestBodyInMemoryLimit)
	w("SecRequestBodyLimitAction Reject")
	w(`SecRule REQBODY_ERROR "!@eq 0" "id:'200002',phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.',logdata:'%%{reqbody_error_msg}',severity:2"`)
	w(`SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:'200003',phase:2,t:none,log,deny,status:400,msg:'Multipart request body failed strict validation.'"`)
	// Argument limits (Coraza's recommended configuration, and
	// ModSecurity's 200007 for multipart bodies, whose fields Coraza does
	// not cap): beyond 1,000 arguments per source the rest would go
	// uninspected, so the request is refused instead, before the CRS
	// iterates over them.
	w("SecArgumentsLimit %d", argumentsLimit)
	w(`SecRule ARGUMENTS_LIMIT_REACHED "@eq 1" "id:'200004',phase:1,t:none,log,deny,status:400,msg:'Argument limit reached; request rejected (GET/PATH args)'"`)
	w(`SecRule ARGUMENTS_LIMIT_REACHED "@eq 1" "id:'200005',phase:2,t:none,log,deny,status:400,msg:'Argument limit reached; request rejected (POST args)'"`)
	w(`SecRule &ARGS_POST "@gt %d" "id:'200007',phase:2,t:none,log,deny,status:400,msg:'Failed to fully parse request body due to large argument count'"`, argumentsLimit)
	// Coraza's @rx pre-filter (SecRxPreFilter, experimental in v3.8.1) is
	// left off: with it, CRS regression tests 932311-7 and 942220-2 miss
	// their rule (an attack let through), and it saved no measurable CPU
	// on the benchmark's benign mix.
	if p.ResponseInspection {
		w("SecResponseBodyAccess On")
		w("SecResponseBodyMimeTypesClear")
		w("SecResponseBodyMimeType %s", strings.Join(p.ResponseBodyMimeTypes, " "))
		w("SecResponseBodyLimit %d", p.ResponseBodyLimit)
		w("SecResponseBodyLimitAction ProcessPartial")
	} else {
		w("SecResponseBodyAccess Off")
	}
	w("SecAuditEngine Off")
	// The CRS setup sets the default actions of phases 1 and 2; without
	// these, response rules would match without being logged.
	w(`SecDefaultAction "phase:3,log,auditlog,pass"`)
	w(`SecDefaultAction "phase:4,log,auditlog,pass"`)
	if strings.TrimSpace(p.CustomRules) != "" {
		w("# custom rules")
		b.WriteString(p.CustomRules)
		if !strings.HasSuffix(p.CustomRules, "\n") {
			b.WriteByte('\n')
		}
	}
	w("Include @crs-setup.conf.example")
	w(`SecAction "id:900000,phase:1,pass,t:none,nolog,setvar:tx.blocking_paranoia_level=%d"`, p.ParanoiaLevel)
	w(`SecAction "id:900110,phase:1,pass,t:none,nolog,setvar:tx.inbound_anomaly_score_threshold=%d,setvar:tx.outbound_anomaly_score_threshold=%d"`,
		p.InboundAnomalyThreshold, p.OutboundAnomalyThreshold)
	// Run-time exclusions (scoped to a path) must run before the rules
	// they remove; configure-time ones are applied after the rules exist.
	id := generatedRuleIDBase
	for _, e := range p.Exclusions {
		if e.PathPrefix == "" {
			continue
		}
		var ctls []string
		for _, r := range e.RuleIDs {
			if len(e.Targets) == 0 {
				ctls = append(ctls, "ctl:ruleRemoveById="+r)
				continue
			}
			for _, t := range e.Targets {
				ctls = append(ctls, "ctl:ruleRemoveTargetById="+r+";"+t)
			}
		}
		for _, tag := range e.Tags {
			if len(e.Targets) == 0 {
				ctls = append(ctls, "ctl:ruleRemoveByTag="+tag)
				continue
			}
			for _, t := range e.Targets {
				ctls = append(ctls, "ctl:ruleRemoveTargetByTag="+tag+";"+t)
			}
		}
		w(`SecRule REQUEST_FILENAME "@beginsWith %s" "id:%d,phase:1,pass,t:none,nolog,%s"`, e.PathPrefix, id, strings.Join(ctls, ","))
		id++
	}
	w("Include @owasp_crs/*.conf")
	for _, e := range p.Exclusions {
		if e.PathPrefix != "" {
			continue
		}
		if len(e.Targets) == 0 {
			if len(e.RuleIDs) > 0 {
				w("SecRuleRemoveById %s", strings.Join(e.RuleIDs, " "))
			}
			for _, tag := range e.Tags {
				w(`SecRuleRemoveByTag "%s"`, tag)
			}
			continue
		}
		for _, t := range e.Targets {
			for _, r := range e.RuleIDs {
				w(`SecRuleUpdateTargetById %s "!%s"`, r, t)
			}
			for _, tag := range e.Tags {
				w(`SecRuleUpdateTargetByTag "%s" "!%s"`, tag, t)
			}
		}
	}
	return b.String()
}

// compilePolicy builds the Coraza WAF for a policy. onMatch, if set, sees
// every matched rule that logs (ModSecurity's error log).
func compilePolicy(p *Policy, onMatch func(types.MatchedRule)) (coraza.WAF, error) {
	cfg := coraza.NewWAFConfig().
		WithRootFS(coreruleset.FS).
		WithDirectives(Directives(p))
	if onMatch != nil {
		cfg = cfg.WithErrorCallback(onMatch)
	}
	return newCorazaWAF(cfg)
}

// newCorazaWAF is the one place rules are compiled: with clusterwall's
// operators (rx.go) in Coraza's registry.
func newCorazaWAF(cfg coraza.WAFConfig) (coraza.WAF, error) {
	registerOperators()
	return coraza.NewWAF(cfg)
}

// compile builds the policy's Coraza WAF, placing SecLang errors in the
// custom rules at their file line.
func (p *Policy) compile() *policy.Error {
	if p.Mode == ModeOff {
		return nil
	}
	directives := Directives(p)
	if w, ok := cachedWAF(directives); ok {
		p.waf = w
		return nil
	}
	if strings.TrimSpace(p.CustomRules) != "" {
		// Custom rules alone first, directive by directive when they fail,
		// so that the error names the line of the bad directive.
		if _, err := newCorazaWAF(coraza.NewWAFConfig().WithRootFS(coreruleset.FS).WithDirectives(p.CustomRules)); err != nil {
			return p.customRulesError(err)
		}
	}
	w, err := compilePolicy(p, nil)
	if err != nil {
		return &policy.Error{Pos: p.customRulesPos, Path: p.customRulesKey,
			Msg: fmt.Sprintf("%s: Coraza rejected policy %q: %v", p.customRulesKey, p.Name, err)}
	}
	p.waf = w
	storeWAF(directives, w)
	return nil
}

// customRulesError finds the first directive of the custom rules that does
// not compile and reports it at its line.
func (p *Policy) customRulesError(whole error) *policy.Error {
	dirs := splitDirectives(p.CustomRules)
	var acc strings.Builder
	for _, d := range dirs {
		acc.WriteString(d.text)
		acc.WriteByte('\n')
		if _, err := newCorazaWAF(coraza.NewWAFConfig().WithRootFS(coreruleset.FS).WithDirectives(acc.String())); err != nil {
			pos := p.customRulesPos
			if pos.Line > 0 {
				if p.customRulesBlock {
					pos.Line += 1 + d.line
					pos.Column = d.indent + 1 + p.blockIndent
				} else {
					pos.Line += d.line
				}
			}
			return &policy.Error{Pos: pos, Path: p.customRulesKey,
				Msg: fmt.Sprintf("%s: line %d of the custom rules: %v", p.customRulesKey, d.line+1, err)}
		}
	}
	return &policy.Error{Pos: p.customRulesPos, Path: p.customRulesKey, Msg: fmt.Sprintf("%s: %v", p.customRulesKey, whole)}
}

type directive struct {
	text   string
	line   int // 0-based line of the custom rules where it starts
	indent int
}

// splitDirectives cuts SecLang text into directives, joining lines that
// end with a backslash, skipping comments and blank lines.
func splitDirectives(s string) []directive {
	var out []directive
	lines := strings.Split(s, "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimRight(lines[i], " \t\r")
		t := strings.TrimLeft(l, " \t")
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		d := directive{line: i, indent: len(l) - len(t)}
		var b strings.Builder
		for strings.HasSuffix(l, "\\") && i+1 < len(lines) {
			b.WriteString(strings.TrimSuffix(l, "\\"))
			b.WriteByte(' ')
			i++
			l = strings.TrimRight(lines[i], " \t\r")
		}
		b.WriteString(l)
		d.text = b.String()
		out = append(out, d)
	}
	return out
}
