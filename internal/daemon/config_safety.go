package daemon

func ptrTo[T any](v T) *T { return &v }

func derefOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// Warnings lists settings of the config that leave the firewall exposed
// in a hostile network; the daemon logs each one loudly at start
// (docs/operations.md, "Budgets and safe defaults").
func (c *Config) Warnings() []string {
	var out []string
	if c.LogSink().Unbounded() {
		out = append(out, "decision log retention is unbounded (log.maxBackups: 0 and log.maxAgeDays: 0): "+
			"a flood of denied flows fills the disk; set either (defaults 10 files, 14 days)")
	}
	return out
}
