package main

import (
	"github.com/clusterwall/clusterwall/internal/daemon"
	"github.com/clusterwall/clusterwall/internal/match"
)

// readDaemonFiles loads and validates the daemon config at path (as
// `clusterwall run` would) and returns the files it names.
func readDaemonFiles(path string) (*daemonFiles, error) {
	c, err := daemon.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	return &daemonFiles{policy: c.Policy, serviceTags: c.ServiceTags, logFile: c.Log.File}, nil
}

// explainGatewayConfig reads the daemon's config file (when given): the
// gateway the daemon compiles its matcher and its ruleset for
// (Config.GatewayConfig, which its data plane config is made of), its
// policy and its service tags file.
func explainGatewayConfig(path string) (gw *match.Gateway, policyFile, tagsFile string, err error) {
	if path == "" {
		return nil, "", "", nil
	}
	c, err := daemon.LoadConfig(path)
	if err != nil {
		return nil, "", "", err
	}
	return c.GatewayConfig().Gateway(), c.Policy, c.ServiceTags, nil
}
