package azcli

import (
	"reflect"
	"strings"
	"testing"
)

// testSpecs is a small command: one required single flag with a short
// alias, multi flags in a one-of group, an ignored flag and -h.
var testSpecs = []FlagSpec{
	{Name: "policy", Required: true},
	{Name: "name", Short: "n", Required: true},
	{Name: "collection-name", Short: "c"},
	{Name: "protocols", Multi: true},
	{Name: "source-addresses", Multi: true, OneOf: "source"},
	{Name: "source-ip-groups", Multi: true, OneOf: "source"},
	{Name: "priority"},
	{Name: "rcg-name", Aliases: []string{"rule-collection-group-name"}},
	{Name: "resource-group", Short: "g", Ignored: true},
	{Name: "help", Short: "h", Bool: true},
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want map[string][]string
	}{
		{
			name: "multi values up to the next flag",
			args: []string{"--policy", "p.yaml", "-n", "fqdn", "--protocols", "http=80", "https=443", "--source-addresses", "*"},
			want: map[string][]string{"policy": {"p.yaml"}, "name": {"fqdn"}, "protocols": {"http=80", "https=443"}, "source-addresses": {"*"}},
		},
		{
			name: "equals form, value may start with a dash",
			args: []string{"--policy=p.yaml", "--name=-weird", "--source-ip-groups=g1", "-c=coll"},
			want: map[string][]string{"policy": {"p.yaml"}, "name": {"-weird"}, "source-ip-groups": {"g1"}, "collection-name": {"coll"}},
		},
		{
			name: "negative numbers and a lone dash are values",
			args: []string{"--policy", "p", "-n", "x", "--priority", "-5", "--source-addresses", "-", "-1", "1.2.3.4"},
			want: map[string][]string{"policy": {"p"}, "name": {"x"}, "priority": {"-5"}, "source-addresses": {"-", "-1", "1.2.3.4"}},
		},
		{
			name: "equals in a space-separated value is kept",
			args: []string{"--policy", "p", "-n", "x", "--protocols", "https=443", "--source-addresses", "10.0.0.0/8"},
			want: map[string][]string{"policy": {"p"}, "name": {"x"}, "protocols": {"https=443"}, "source-addresses": {"10.0.0.0/8"}},
		},
		{
			name: "ignored and aliased flags",
			args: []string{"-g", "$RG", "--policy", "p", "-n", "x", "--rule-collection-group-name", "G", "--source-addresses", "*"},
			want: map[string][]string{"resource-group": {"$RG"}, "policy": {"p"}, "name": {"x"}, "rcg-name": {"G"}, "source-addresses": {"*"}},
		},
		{
			name: "empty value",
			args: []string{"--policy", "p", "-n", "", "--source-addresses", "*"},
			want: map[string][]string{"policy": {"p"}, "name": {""}, "source-addresses": {"*"}},
		},
		{
			name: "help skips required checks",
			args: []string{"--protocols", "TCP", "-h"},
			want: map[string][]string{"protocols": {"TCP"}, "help": nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseArgs(tt.args, testSpecs)
			if err != nil {
				t.Fatalf("ParseArgs: %v", err)
			}
			if !reflect.DeepEqual(a.values, tt.want) {
				t.Errorf("values = %q, want %q", a.values, tt.want)
			}
			for name, vals := range tt.want {
				if !a.Has(name) {
					t.Errorf("Has(%q) = false", name)
				}
				if len(vals) > 0 && a.Get(name) != vals[0] {
					t.Errorf("Get(%q) = %q, want %q", name, a.Get(name), vals[0])
				}
			}
		})
	}
}

func TestParseArgsOrder(t *testing.T) {
	a, err := ParseArgs([]string{"-n", "x", "--source-addresses", "*", "--policy", "p"}, testSpecs)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := a.Names(), []string{"name", "source-addresses", "policy"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	if a.Has("priority") || a.Get("priority") != "" || a.List("protocols") != nil {
		t.Error("flags not given must read as absent")
	}
}

func TestParseArgsErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // substrings of the error
	}{
		{"unknown flag lists valid ones", []string{"--policy", "p", "--sorce-addresses", "*"},
			[]string{"unknown flag --sorce-addresses", "did you mean --source-addresses?", "valid flags:", "--name/-n", "--collection-name/-c"}},
		{"unique prefix is suggested, not accepted", []string{"--policy", "p", "--collection", "c"},
			[]string{"unknown flag --collection (did you mean --collection-name?)"}},
		{"ambiguous prefix", []string{"--source", "*"}, []string{"unknown flag --source;"}},
		{"unknown short flag", []string{"-x", "1"}, []string{"unknown flag -x"}},
		{"ignored flags are not advertised", []string{"--bogus"}, []string{"unknown flag --bogus"}},
		{"missing required and one-of", []string{"--protocols", "TCP"},
			[]string{"missing required flags: --policy, --name/-n; one of --source-addresses or --source-ip-groups"}},
		{"missing one-of only", []string{"--policy", "p", "-n", "x"},
			[]string{"missing required flag: one of --source-addresses or --source-ip-groups"}},
		{"flag without value", []string{"--policy", "p", "-n"}, []string{"flag -n needs a value"}},
		{"flag followed by a flag", []string{"--policy", "--name", "x"}, []string{"flag --policy needs a value"}},
		{"single flag with two values", []string{"--policy", "p", "-n", "my", "rule"},
			[]string{`flag -n takes one value, got 2: "my" "rule"`, "quote"}},
		{"positional argument", []string{"stray", "--policy", "p"}, []string{`unexpected argument "stray"`}},
		{"value after equals form", []string{"--protocols=TCP", "UDP"}, []string{`unexpected argument "UDP"`}},
		{"given twice", []string{"-n", "a", "--name", "b"}, []string{"flag --name/-n is given twice (as -n and --name)"}},
		{"alias given twice", []string{"--rcg-name", "a", "--rule-collection-group-name", "b"}, []string{"given twice"}},
		{"bool with value", []string{"--help=yes"}, []string{"flag --help takes no value"}},
		{"double dash alone", []string{"--"}, []string{"unknown flag --"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseArgs(tt.args, testSpecs)
			if err == nil {
				t.Fatal("ParseArgs succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLooksLikeFlag(t *testing.T) {
	for s, want := range map[string]bool{
		"--x": true, "-n": true, "--": true, "-é": true,
		"-": false, "-1": false, "-5-6": false, "*": false, "": false, "x-y": false, "-*": false,
	} {
		if got := looksLikeFlag(s); got != want {
			t.Errorf("looksLikeFlag(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestUsageListsEveryFlag(t *testing.T) {
	u := Usage("clusterwall x create", testSpecs)
	for _, s := range testSpecs {
		if !strings.Contains(u, "--"+s.Name) {
			t.Errorf("usage lacks --%s:\n%s", s.Name, u)
		}
	}
	if !strings.Contains(u, "-n, --name") || !strings.Contains(u, "(required)") {
		t.Errorf("usage lacks short alias or required mark:\n%s", u)
	}
}
