package proxy

import "net"

// The child of BenchmarkProxyConnCPU listens as the daemon does (a separate
// file, so that the benchmark also builds against an older proxy).
func init() { benchListen = func(addr string) (net.Listener, error) { return Listen("tcp", addr) } }
