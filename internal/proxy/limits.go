package proxy

import (
	"github.com/clusterwall/clusterwall/internal/fairshare"
)

// Connection limits fair across sources (internal/fairshare): per client
// address (Config.MaxConnsPerSource; refused beyond), per client /24 or
// /64 (MaxConnsPerPrefix) and in all (MaxConns); when a network or the
// proxy is full, the heaviest source gives up its oldest connection to a
// lighter newcomer instead of the newcomer being reset (issue 17: 40
// addresses holding idle connections filled the global limit of 16,384
// and every other client was reset). A shed connection is reset on its
// event loop (or its session's sockets closed) with a decision line.

// Refusal reasons (the decision log's ActionReason).
const (
	reasonLimitSource  = "per-source connection limit reached"
	reasonLimitNetwork = "per-network connection limit reached"
	reasonLimitGlobal  = "global connection limit reached"
	reasonShed         = "connection shed: a connection limit was reached and this source held the most connections"
)

func limitReason(r fairshare.Reason) string {
	switch r {
	case fairshare.LimitSource:
		return reasonLimitSource
	case fairshare.LimitNetwork:
		return reasonLimitNetwork
	case fairshare.LimitGlobal:
		return reasonLimitGlobal
	}
	return ""
}
