package main

import "github.com/clusterwall/clusterwall/internal/daemon"

// readDaemonFiles loads and validates the daemon config at path (as
// `clusterwall run` would) and returns the files it names.
func readDaemonFiles(path string) (*daemonFiles, error) {
	c, err := daemon.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	return &daemonFiles{policy: c.Policy, serviceTags: c.ServiceTags, logFile: c.Log.File}, nil
}
