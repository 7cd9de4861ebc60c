package main

import (
	"fmt"
	"io"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/threatintel"
)

// explainThreatIntel loads the policy's threat-intel feeds (files; URL
// feeds are not downloaded by explain) so that explain decides as the
// daemon does: threat intelligence before every rule. nil in mode Off.
func explainThreatIntel(p *policy.Policy, warn io.Writer) (match.ThreatIntel, error) {
	if p.ThreatIntel.Mode == policy.ActionInvalid {
		return nil, nil
	}
	e := threatintel.New(threatintel.Options{})
	if err := e.Reload(p.ThreatIntel); err != nil {
		fmt.Fprintf(warn, "warning: %v\n", err)
	}
	for _, f := range p.ThreatIntel.Feeds {
		if f.URL != "" {
			fmt.Fprintf(warn, "note: threat-intel feed %s (%s) is not downloaded by explain\n", f.Name, f.URL)
		}
	}
	return e, nil
}
