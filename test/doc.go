// Package e2e holds clusterwall's end-to-end tests: each brings up a lab
// (internal/lab) in fresh network namespaces with unique names, runs the
// real daemon (`clusterwall run`, built once per run) in its firewall host
// with a test policy, and sends real flows through it: every rule kind in
// both families, priorities, default deny, DNAT that keeps the client's
// address, SNAT, reloads (atomicity, cutting connections the new policy
// denies, rejecting a bad policy), failing closed when the daemon dies,
// the decision log, and `clusterwall dataplane show|flush`.
//
// The tests need root and iproute2; elsewhere they skip. Every lab is
// removed when its test ends.
package e2e
