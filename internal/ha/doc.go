// Package ha runs clusterwall as a highly available pair (or more) of
// gateways with the standard Linux building blocks: keepalived (VRRP)
// moves the cluster-side gateway addresses and the public IPs, and
// conntrackd (FTFW over a dedicated sync link) replicates connection
// tracking state, NAT included, so that established flows continue on the
// new active gateway.
//
// The daemon's config has an `ha:` section (Config); Validate turns it
// into a Spec, from which this package renders keepalived's and
// conntrackd's configurations and a notify script (render.go), and a
// Manager runs them: it supervises both processes with files of their own
// (pid, lock, control socket, log) in the Spec's RunDir, follows
// keepalived's transitions through its notify FIFO, reads conntrackd's
// counters, and serves and polls the peer API on the sync link (role,
// readiness, policy generation). docs/ha.md explains the design.
package ha
