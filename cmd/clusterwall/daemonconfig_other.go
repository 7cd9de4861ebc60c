//go:build !linux

package main

// readDaemonFiles: a daemon config is validated with the Linux data
// plane's settings, which this build does not have.
func readDaemonFiles(path string) (*daemonFiles, error) {
	return nil, errNeedsLinux("reading the daemon config " + path + " (--config)")
}
