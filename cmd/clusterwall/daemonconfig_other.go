//go:build !linux

package main

import "github.com/clusterwall/clusterwall/internal/match"

// readDaemonFiles: a daemon config is validated with the Linux data
// plane's settings, which this build does not have.
func readDaemonFiles(path string) (*daemonFiles, error) {
	return nil, errNeedsLinux("reading the daemon config " + path + " (--config)")
}

// explainGatewayConfig: explain --config reads the daemon config, which
// needs the Linux build (readDaemonFiles); without --config explain works.
func explainGatewayConfig(path string) (gw *match.Gateway, policyFile, tagsFile string, err error) {
	if path == "" {
		return nil, "", "", nil
	}
	return nil, "", "", errNeedsLinux("reading the daemon config " + path + " (explain --config)")
}
