package policy

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// ServiceTags maps service tag names (case-insensitive) to their addresses.
type ServiceTags map[string]AddrSet

// Lookup finds a tag by name, ignoring case.
func (t ServiceTags) Lookup(name string) (AddrSet, bool) {
	s, ok := t[strings.ToLower(name)]
	return s, ok
}

// serviceTagsFile is Azure's published ServiceTags_Public_*.json format.
type serviceTagsFile struct {
	Values []struct {
		Name       string `json:"name"`
		Properties struct {
			AddressPrefixes []string `json:"addressPrefixes"`
		} `json:"properties"`
	} `json:"values"`
}

// LoadServiceTags reads a file in Azure's ServiceTags_Public_*.json format.
func LoadServiceTags(path string) (ServiceTags, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseServiceTags(path, data)
}

// ParseServiceTags parses Azure's ServiceTags_Public_*.json format.
func ParseServiceTags(name string, data []byte) (ServiceTags, error) {
	var f serviceTagsFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %v", name, jsonErr(data, err))
	}
	tags := ServiceTags{}
	for i, v := range f.Values {
		if v.Name == "" {
			return nil, fmt.Errorf("%s: values[%d]: missing name", name, i)
		}
		var b AddrSetBuilder
		for j, p := range v.Properties.AddressPrefixes {
			tok, err := ParseAddrToken(p, &b)
			if err != nil || tok == TokenName || tok == TokenAny {
				return nil, fmt.Errorf("%s: values[%d] (%s): properties.addressPrefixes[%d]: bad prefix %q", name, i, v.Name, j, p)
			}
		}
		tags[strings.ToLower(v.Name)] = b.Build()
	}
	return tags, nil
}

// jsonErr turns an encoding/json error into one with line:column.
func jsonErr(data []byte, err error) string {
	var off int64 = -1
	switch e := err.(type) {
	case *json.SyntaxError:
		off = e.Offset
	case *json.UnmarshalTypeError:
		off = e.Offset
	}
	if off < 0 {
		return err.Error()
	}
	line, col := 1, 1
	for i := int64(0); i < off && i < int64(len(data)); i++ {
		if data[i] == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return fmt.Sprintf("line %d, column %d: %v", line, col, err)
}

// BuiltinFQDNTags returns the built-in FQDN tags. "{location}" in a name is
// replaced by the policy's location; without a location the label is
// dropped and the pattern widened ("*.hcp.{location}.azmk8s.io" becomes
// "*.azmk8s.io").
func BuiltinFQDNTags() map[string][]string {
	return map[string][]string{
		// The AKS required outbound FQDNs (HTTP/HTTPS) as Azure documents them.
		"AzureKubernetesService": {
			"*.hcp.{location}.azmk8s.io",
			"mcr.microsoft.com",
			"*.data.mcr.microsoft.com",
			"mcr-0001.mcr-msedge.net",
			"management.azure.com",
			"login.microsoftonline.com",
			"packages.microsoft.com",
			"acs-mirror.azureedge.net",
			"packages.aks.azure.com",
		},
	}
}

func expandLocation(s, location string) string {
	if !strings.Contains(s, "{location}") {
		return s
	}
	if location == "" {
		return "*.azmk8s.io"
	}
	return strings.ReplaceAll(s, "{location}", strings.ToLower(location))
}
