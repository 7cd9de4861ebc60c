//go:build race

package e2e

// Under `go test -race` the daemon the tests run is built with -race too,
// and a test fails when the daemon's log reports a data race.
func init() { raceBuild = true }
