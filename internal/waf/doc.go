// Package waf is clusterwall's ingress Web Application Firewall: an HTTP(S)
// reverse proxy that inspects every request (and, if asked, every response)
// with Coraza and the embedded OWASP Core Rule Set, answers blocked requests
// with a 403 page carrying a correlation ID, writes one JSON line per block
// or detection, and routes what passes to backends by host and path prefix
// with round-robin, passive and active health checks.
//
// The flow is parse, validate, compile, swap: ParseConfig checks a YAML file
// (FILE:LINE:COL errors, SecLang compiled by Coraza), NewServer compiles
// each WAF policy once, and Reload swaps routes and policies atomically
// while in-flight requests finish on the state they started with.
package waf
