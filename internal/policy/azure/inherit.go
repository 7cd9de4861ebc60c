package azure

import "github.com/clusterwall/clusterwall/internal/policy"

// base imports the picked policy's base policy (--include-base).
func (im *importer) base(f *policy.File, pol *resource, all []*resource) {}
