// Package threatintel is clusterwall's threat intelligence: lists of known
// bad IP addresses, networks and domains ("feeds"), read from files and
// refreshed from URLs, compiled into an immutable Set that answers lookups
// without allocating, and an Engine that applies the policy's mode (Off,
// Alert, Deny) and allowlist.
//
// Azure Firewall evaluates threat intelligence before every rule kind; the
// matcher's threat-intel hook and the DNS proxy's Block hook both ask
// Engine.Check, so the kernel path, the L7 proxy and the DNS proxy agree.
//
// The life of a feed:
//
//	file or URL --Parse--> FeedData (entries, invalid lines counted)
//	all feeds + allowlist --Compile--> *Set (immutable)
//	Engine: atomic.Pointer swap on Reload and on every refresh
//
// A feed that cannot be read, or whose download fails, keeps its previous
// contents; a bad line is counted and reported, never fatal to the rest of
// the feed. docs/threatintel.md documents the formats and the modes.
package threatintel
