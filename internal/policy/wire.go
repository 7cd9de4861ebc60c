package policy

import (
	"bytes"
	"encoding/json"

	"gopkg.in/yaml.v3"
)

// The wire format: what a policy YAML file holds. Field names are those of
// Azure Firewall Policy's ARM schema where one exists, so that an exported
// policy reads the same. docs/policy.md documents every field.

// File is a policy file.
type File struct {
	APIVersion            string              `yaml:"apiVersion,omitempty" json:"apiVersion,omitempty"`
	Kind                  string              `yaml:"kind,omitempty" json:"kind,omitempty"`
	Name                  string              `yaml:"name,omitempty" json:"name,omitempty"`
	Location              string              `yaml:"location,omitempty" json:"location,omitempty"`
	BasePolicy            *WireBase           `yaml:"basePolicy,omitempty" json:"basePolicy,omitempty"`
	ServiceTags           string              `yaml:"serviceTags,omitempty" json:"serviceTags,omitempty"`
	ServiceTagDefinitions map[string][]string `yaml:"serviceTagDefinitions,omitempty" json:"serviceTagDefinitions,omitempty"`
	IPGroups              map[string][]string `yaml:"ipGroups,omitempty" json:"ipGroups,omitempty"`
	FQDNTags              map[string][]string `yaml:"fqdnTags,omitempty" json:"fqdnTags,omitempty"`
	ThreatIntel           *WireThreatIntel    `yaml:"threatIntel,omitempty" json:"threatIntel,omitempty"`
	DNS                   *WireDNS            `yaml:"dns,omitempty" json:"dns,omitempty"`
	RuleCollectionGroups  []WireGroup         `yaml:"ruleCollectionGroups,omitempty" json:"ruleCollectionGroups,omitempty"`
}

// WireThreatIntel configures threat-intelligence filtering.
type WireThreatIntel struct {
	Mode      string         `yaml:"mode,omitempty" json:"mode,omitempty"` // Off, Alert, Deny
	Allowlist *WireAllowlist `yaml:"allowlist,omitempty" json:"allowlist,omitempty"`
	Feeds     []WireFeed     `yaml:"feeds,omitempty" json:"feeds,omitempty"`
}

// WireAllowlist names addresses and FQDNs that threat intelligence never blocks.
type WireAllowlist struct {
	IPAddresses []string `yaml:"ipAddresses,omitempty" json:"ipAddresses,omitempty"`
	FQDNs       []string `yaml:"fqdns,omitempty" json:"fqdns,omitempty"`
}

// WireFeed is one threat-intelligence feed.
type WireFeed struct {
	Name   string `yaml:"name,omitempty" json:"name,omitempty"`
	File   string `yaml:"file,omitempty" json:"file,omitempty"`
	URL    string `yaml:"url,omitempty" json:"url,omitempty"`
	Format string `yaml:"format,omitempty" json:"format,omitempty"`
}

// WireDNS configures the DNS proxy.
type WireDNS struct {
	EnableProxy *bool    `yaml:"enableProxy,omitempty" json:"enableProxy,omitempty"`
	Servers     []string `yaml:"servers,omitempty" json:"servers,omitempty"`
}

// WireGroup is a rule collection group.
type WireGroup struct {
	Name            string           `yaml:"name" json:"name"`
	Priority        int              `yaml:"priority" json:"priority"`
	RuleCollections []WireCollection `yaml:"ruleCollections,omitempty" json:"ruleCollections,omitempty"`
}

// WireCollection is a rule collection.
type WireCollection struct {
	Name     string     `yaml:"name" json:"name"`
	Kind     string     `yaml:"kind" json:"kind"` // DNAT, Network, Application
	Priority int        `yaml:"priority" json:"priority"`
	Action   string     `yaml:"action" json:"action"` // Allow, Deny, DNAT
	Rules    []WireRule `yaml:"rules,omitempty" json:"rules,omitempty"`
}

// WireRule is a rule of any kind; validation checks that only the fields of
// its collection's kind are set.
type WireRule struct {
	Name                 string   `yaml:"name" json:"name"`
	Description          string   `yaml:"description,omitempty" json:"description,omitempty"`
	Protocols            []string `yaml:"protocols,omitempty" json:"protocols,omitempty"`
	SourceAddresses      []string `yaml:"sourceAddresses,omitempty" json:"sourceAddresses,omitempty"`
	SourceIPGroups       []string `yaml:"sourceIpGroups,omitempty" json:"sourceIpGroups,omitempty"`
	DestinationAddresses []string `yaml:"destinationAddresses,omitempty" json:"destinationAddresses,omitempty"`
	DestinationIPGroups  []string `yaml:"destinationIpGroups,omitempty" json:"destinationIpGroups,omitempty"`
	DestinationFQDNs     []string `yaml:"destinationFqdns,omitempty" json:"destinationFqdns,omitempty"`
	DestinationPorts     []string `yaml:"destinationPorts,omitempty" json:"destinationPorts,omitempty"`
	TargetFQDNs          []string `yaml:"targetFqdns,omitempty" json:"targetFqdns,omitempty"`
	FQDNTags             []string `yaml:"fqdnTags,omitempty" json:"fqdnTags,omitempty"`
	TranslatedAddress    string   `yaml:"translatedAddress,omitempty" json:"translatedAddress,omitempty"`
	TranslatedFQDN       string   `yaml:"translatedFqdn,omitempty" json:"translatedFqdn,omitempty"`
	TranslatedPort       string   `yaml:"translatedPort,omitempty" json:"translatedPort,omitempty"`
}

// WireBase is a policy's base (parent) policy: the path of its file
// (relative to the child's file), or the base policy itself, inline.
type WireBase struct {
	Path   string
	Policy *File
}

// UnmarshalYAML reads a path (a string) or an inline policy (a mapping).
func (b *WireBase) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		return n.Decode(&b.Path)
	}
	b.Policy = &File{}
	return n.Decode(b.Policy)
}

// MarshalYAML writes the path, or the inline policy.
func (b WireBase) MarshalYAML() (any, error) {
	if b.Policy != nil {
		return b.Policy, nil
	}
	return b.Path, nil
}

// UnmarshalJSON reads a path (a string) or an inline policy (an object).
func (b *WireBase) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '"' {
		return json.Unmarshal(data, &b.Path)
	}
	b.Policy = &File{}
	return json.Unmarshal(data, b.Policy)
}

// MarshalJSON writes the path, or the inline policy.
func (b WireBase) MarshalJSON() ([]byte, error) {
	if b.Policy != nil {
		return json.Marshal(b.Policy)
	}
	return json.Marshal(b.Path)
}
