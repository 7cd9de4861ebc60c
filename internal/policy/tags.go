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

// FQDNTag is one of Azure Firewall's FQDN tags.
type FQDNTag struct {
	Name string
	// FQDNs are the patterns clusterwall builds in for the tag; nil when it
	// does not (see Why). "{location}" stands for the policy's region.
	FQDNs []string
	// Source says where the list comes from.
	Source string
	// Why says why a tag is not built in.
	Why string
}

// azureFQDNTags are every FQDN tag Azure Firewall documents
// (learn.microsoft.com/azure/firewall/fqdn-tags, protect-office-365,
// windows-365/enterprise/azure-firewall-windows-365). Azure's own page says
// Microsoft manages which FQDNs a tag holds and does not publish them as
// the tag's definition; a tag is built in only where a Microsoft document
// lists what it covers, and the source is named.
var azureFQDNTags = []FQDNTag{
	{
		Name: "AzureKubernetesService",
		// learn.microsoft.com/azure/aks/outbound-rules-control-egress,
		// "Azure Global required FQDN / application rules" (what the
		// AzureKubernetesService FQDN tag stands for).
		Source: "learn.microsoft.com/azure/aks/outbound-rules-control-egress (Azure Global required FQDN / application rules)",
		FQDNs: []string{
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
	},
	{
		Name: "WindowsUpdate",
		// learn.microsoft.com/azure/firewall/fqdn-tags: "Allow outbound access
		// to Microsoft Update as described in How to Configure a Firewall for
		// Software Updates" (technet.microsoft.com/library/bb693717.aspx,
		// Configuration Manager): the domains that page lists.
		Source: "learn.microsoft.com/azure/firewall/fqdn-tags, which refers to Configuration Manager's \"How to Configure a Firewall for Software Updates\" (technet bb693717) for the domains",
		FQDNs: []string{
			"windowsupdate.microsoft.com",
			"*.windowsupdate.microsoft.com",
			"*.update.microsoft.com",
			"*.windowsupdate.com",
			"download.windowsupdate.com",
			"download.microsoft.com",
			"*.download.windowsupdate.com",
			"wustat.windows.com",
			"ntservicepack.microsoft.com",
		},
	},
	{Name: "WindowsDiagnostics", Why: "Microsoft keeps the Windows diagnostic data endpoints behind the tag and does not publish them as its definition"},
	{Name: "MicrosoftActiveProtectionService", Why: "Microsoft keeps the Defender cloud protection (MAPS) endpoints behind the tag and does not publish them as its definition"},
	{Name: "AppServiceEnvironment", Why: "Microsoft keeps the App Service Environment platform endpoints behind the tag and does not publish them as its definition"},
	{Name: "AzureBackup", Why: "Microsoft keeps the Azure Backup endpoints behind the tag and does not publish them as its definition"},
	{Name: "AzureHDInsight", Why: "Microsoft keeps the HDInsight platform endpoints behind the tag and does not publish them as its definition"},
	{Name: "WindowsVirtualDesktop", Why: "Microsoft keeps the Azure Virtual Desktop endpoints behind the tag and does not publish them as its definition"},
	{Name: "Windows365", Why: "Microsoft keeps the Windows 365 endpoints behind the tag and does not publish them as its definition"},
	{Name: "MicrosoftIntune", Why: "Microsoft keeps the Intune endpoints behind the tag and does not publish them as its definition"},
	{Name: "citrixHdxPlusForWindows365", Why: "Microsoft keeps the Citrix HDX Plus endpoints behind the tag and does not publish them as its definition"},
}

// office365Tag reports whether name is one of the Office 365 tags Azure
// builds from the Microsoft 365 endpoints web service
// (Office365.<Exchange|SharePoint|Skype|Common>.<Optimize|Allow|Default>[.Required|.NotRequired]).
func office365Tag(name string) bool {
	l := strings.ToLower(name)
	return strings.HasPrefix(l, "office365.") || strings.HasPrefix(l, "microsoft365.")
}

// LookupFQDNTag finds an Azure FQDN tag by name (any case).
func LookupFQDNTag(name string) (FQDNTag, bool) {
	for _, t := range azureFQDNTags {
		if strings.EqualFold(t.Name, name) {
			return t, true
		}
	}
	if office365Tag(name) {
		return FQDNTag{Name: name, Why: "Azure builds the Office 365 tags from the Microsoft 365 endpoints web service, which changes every month"}, true
	}
	return FQDNTag{}, false
}

// AzureFQDNTags returns every FQDN tag Azure documents (Office 365 tags
// stand as one entry, "Office365.*").
func AzureFQDNTags() []FQDNTag {
	out := append([]FQDNTag(nil), azureFQDNTags...)
	out = append(out, FQDNTag{Name: "Office365.*", Why: "Azure builds the Office 365 tags from the Microsoft 365 endpoints web service, which changes every month"})
	return out
}

// BuiltinFQDNTags returns the FQDN tags clusterwall builds in. "{location}"
// in a name is replaced by the policy's location; without a location the
// label is dropped and the pattern widened ("*.hcp.{location}.azmk8s.io"
// becomes "*.azmk8s.io").
func BuiltinFQDNTags() map[string][]string {
	out := map[string][]string{}
	for _, t := range azureFQDNTags {
		if t.FQDNs != nil {
			out[t.Name] = append([]string(nil), t.FQDNs...)
		}
	}
	return out
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
