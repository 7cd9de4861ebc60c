package main

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The corpus: real public Azure Firewall templates (Azure's quickstarts, the
// AKS baseline reference implementation, AKS-Construction and
// Azure-Network-Security), kept with their source repository, path and
// commit in internal/policy/azure/testdata/corpus (README.md there).
const corpusDir = "../../internal/policy/azure/testdata/corpus/"

type corpusFlow struct {
	args   []string // explain's flags after --policy
	action string   // Allow, Deny or DNAT
	rule   string   // group/collection/rule, "" for the default deny
	base   string   // the base policy the rule is inherited from
	to     string   // DNAT: translated address:port
}

type corpusCase struct {
	name string
	// args are import's arguments (files relative to the corpus).
	args []string
	// azureRules is how many rules Azure deploys with these parameters,
	// counted by hand from the template (see the comment at each case).
	azureRules int
	// skipped are the rules the import leaves out, each named by a
	// warning that says so and says STRICTER or LOOSER.
	skipped []string
	flows   []corpusFlow
}

// flow builds explain's flags: "10.0.0.1 > 192.0.2.1 tcp/443" or
// "10.0.0.1 > name=192.0.2.1 tcp/443" (a name resolved as given).
func flow(s string, action, rule string) corpusFlow {
	parts := strings.Fields(s)
	f := corpusFlow{action: action, rule: rule}
	f.args = append(f.args, "--src", parts[0])
	dst := parts[2]
	if name, addr, ok := strings.Cut(dst, "="); ok {
		f.args = append(f.args, "--dst", name, "--resolve", name+"="+addr)
	} else {
		f.args = append(f.args, "--dst", dst)
	}
	proto, port, _ := strings.Cut(parts[3], "/")
	f.args = append(f.args, "--proto", proto, "--port", port)
	if len(parts) > 4 {
		f.args = append(f.args, "--scheme", parts[4])
	}
	return f
}

func inherited(f corpusFlow, base string) corpusFlow { f.base = base; return f }
func dnat(f corpusFlow, to string) corpusFlow        { f.to = to; return f }

var corpusCases = []corpusCase{
	{
		// DefaultNetworkRuleCollectionGroup: 1 rule; DefaultApplicationRuleCollectionGroup: 1 + 1.
		name:       "qs-fwpolicy-apprule-netrule-ipgroups",
		args:       []string{"qs-fwpolicy-apprule-netrule-ipgroups/azuredeploy.json", "--parameters", "@qs-fwpolicy-apprule-netrule-ipgroups/azuredeploy.parameters.json", "--location", "eastus"},
		azureRules: 3,
		flows: []corpusFlow{
			flow("10.20.0.5 > 13.86.101.172 udp/123", "Allow", "DefaultNetworkRuleCollectionGroup/azure-global-services-nrc/time-windows"),
			flow("10.40.0.9 > www.microsoft.com=192.0.2.10 tcp/443", "Allow", "DefaultApplicationRuleCollectionGroup/Global-rules-arc/gobal-rule-01"),
			// The WindowsUpdate FQDN tag, built in; collection 1000 before 1202.
			flow("10.50.0.9 > download.windowsupdate.com=192.0.2.11 tcp/80", "Allow", "DefaultApplicationRuleCollectionGroup/global-rule-url-arc/winupdate-rule-01"),
			flow("10.99.0.5 > www.microsoft.com=192.0.2.10 tcp/443", "Deny", ""),
		},
	},
	{
		// One group nested in the policy resource, one Deny rule between IP groups.
		name:       "qs-fwpolicy-ipgroups",
		args:       []string{"qs-fwpolicy-ipgroups/azuredeploy.json", "--parameters", "@qs-fwpolicy-ipgroups/azuredeploy.parameters.json", "--location", "eastus"},
		azureRules: 1,
		flows: []corpusFlow{
			flow("13.73.64.70 > 12.0.0.5 tcp/443", "Deny", "RuleCollectionGroup1/Example-Filter-Rule/network-rule1"),
			flow("13.73.64.70 > 12.0.0.5 udp/53", "Deny", ""),
			flow("10.0.0.1 > 12.0.0.5 tcp/80", "Deny", ""),
		},
	},
	{
		// Classic: 1 network rule, 2 application rules (one Mssql).
		name:       "qs-classic-ipgroups-jumpbox",
		args:       []string{"qs-classic-ipgroups-jumpbox/azuredeploy.json", "--parameters", "@qs-classic-ipgroups-jumpbox/azuredeploy.parameters.json", "--location", "eastus"},
		azureRules: 3,
		flows: []corpusFlow{
			flow("111.1.1.1 > 13.9.0.7 tcp/90", "Allow", "DefaultNetworkRuleCollectionGroup/netRc1/networkRule"),
			flow("13.73.208.130 > www.bing.com=192.0.2.20 tcp/8080 http", "Allow", "DefaultApplicationRuleCollectionGroup/appRc1/someAppRule"),
			flow("13.73.208.130 > www.bing.com=192.0.2.20 tcp/443", "Deny", ""),
		},
	},
	{
		// Classic: 1 network rule, 1 application rule.
		name:       "qs-classic-zones",
		args:       []string{"qs-classic-zones/azuredeploy.json", "--parameters", "@qs-classic-zones/azuredeploy.parameters.json", "--location", "eastus"},
		azureRules: 2,
		flows: []corpusFlow{
			flow("10.0.0.4 > 198.51.100.1 tcp/8080", "Allow", "DefaultNetworkRuleCollectionGroup/netRc1/netRule1"),
			flow("10.0.0.4 > www.microsoft.com=192.0.2.10 tcp/80", "Allow", "DefaultApplicationRuleCollectionGroup/appRc1/appRule1"),
			flow("10.0.0.4 > www.microsoft.com=192.0.2.10 tcp/443", "Deny", ""),
		},
	},
	{
		// Two firewalls; firewall1: 1 network rule, 1 application rule
		// written without sources (API 2019), read as matching no source.
		name:       "qs-classic-forced-tunneling",
		args:       []string{"qs-classic-forced-tunneling/azuredeploy.json", "--parameters", "@qs-classic-forced-tunneling/azuredeploy.parameters.json", "--location", "eastus", "--policy", "firewall1"},
		azureRules: 2,
		skipped:    []string{"DefaultApplicationRuleCollectionGroup/appRc1/appRule1"},
		flows: []corpusFlow{
			flow("10.0.2.4 > 198.51.100.1 tcp/443", "Allow", "DefaultNetworkRuleCollectionGroup/netRc1/netRule1"),
			// A network rule decides before any application rule.
			flow("10.0.2.4 > www.microsoft.com=192.0.2.10 tcp/443", "Allow", "DefaultNetworkRuleCollectionGroup/netRc1/netRule1"),
			flow("10.0.3.4 > www.microsoft.com=192.0.2.10 tcp/443", "Deny", ""),
		},
	},
	{
		// Premium: AllowWeb 2 rules (one by web categories only), BlockPage 1 (URLs).
		name:       "qs-premium",
		args:       []string{"qs-premium/azuredeploy.json", "--parameters", "@qs-premium/azuredeploy.parameters.json", "--location", "eastus"},
		azureRules: 3,
		skipped:    []string{"PolicyRules/AllowWeb/AllowNews"},
		flows: []corpusFlow{
			// BlockPage (100) before AllowWeb (101); the URL rule denies its whole host (stricter).
			flow("10.0.1.4 > azure.microsoft.com=192.0.2.30 tcp/443", "Deny", "PolicyRules/BlockPage/BlockAzureEvents"),
			flow("10.0.1.4 > portal.azure.com=192.0.2.31 tcp/443", "Allow", "PolicyRules/AllowWeb/AllowAzure"),
			flow("10.0.1.4 > news.example.com=192.0.2.32 tcp/443", "Deny", ""),
		},
	},
	{
		// Classic: 1 network rule, 1 application rule without sources.
		name:       "qs-classic-sandbox-linux",
		args:       []string{"qs-classic-sandbox-linux/azuredeploy.json", "--parameters", "@qs-classic-sandbox-linux/azuredeploy.parameters.json"},
		azureRules: 2,
		skipped:    []string{"DefaultApplicationRuleCollectionGroup/appRc1/appRule1"},
		flows: []corpusFlow{
			flow("10.0.2.4 > 198.51.100.1 tcp/8080", "Allow", "DefaultNetworkRuleCollectionGroup/netRc1/netRule1"),
			flow("10.0.2.4 > www.microsoft.com=192.0.2.10 tcp/443", "Deny", ""),
			flow("10.0.2.4 > 198.51.100.1 tcp/9000", "Deny", ""),
		},
	},
	{
		// API 2019-06-01 ruleGroups: NetworkRG 1 rule condition, AppRG 1.
		name:       "qs-rulegroups-sandbox-linux",
		args:       []string{"qs-rulegroups-sandbox-linux/azuredeploy.json", "--parameters", "@qs-rulegroups-sandbox-linux/azuredeploy.parameters.json"},
		azureRules: 2,
		flows: []corpusFlow{
			flow("10.0.2.4 > 198.51.100.1 tcp/80", "Allow", "NetworkRG/NetworkRule1/NetRC1"),
			flow("10.0.2.4 > example.com=192.0.2.40 tcp/8000 http", "Allow", "AppRG/AppRule1/AppRC1"),
			flow("10.0.2.4 > example.com=192.0.2.40 tcp/443", "Deny", ""),
		},
	},
	{
		// The main template deploys nestedtemplates/vnet.json (given as a
		// file): 3 application rules (ASE has no sources and FQDN tags
		// clusterwall does not build in), 3 network rules.
		name:       "qs-ase-firewall",
		args:       []string{"qs-ase-firewall/azuredeploy.json", "qs-ase-firewall/vnet.json", "--parameters", "@qs-ase-firewall/azuredeploy.parameters.json", "--location", "westeurope"},
		azureRules: 6,
		skipped:    []string{"DefaultApplicationRuleCollectionGroup/AppServiceEnvironment/ASE"},
		flows: []corpusFlow{
			flow("10.0.0.5 > 198.51.100.1 udp/123", "Allow", "DefaultNetworkRuleCollectionGroup/Time-Diagnostics/Time"),
			// AzMonitor (priority 200) before Time-Diagnostics (300).
			flow("10.0.0.5 > 198.18.30.5 tcp/443", "Allow", "DefaultNetworkRuleCollectionGroup/AzMonitor/AzMonitor"),
			flow("10.0.0.5 > dc.services.visualstudio.com=192.0.2.50 tcp/443", "Allow", "DefaultApplicationRuleCollectionGroup/AppServiceEnvironment/AzureMonitorRules"),
			flow("10.0.0.5 > control-westeurope.identity.azure.net=192.0.2.51 tcp/443", "Allow", "DefaultApplicationRuleCollectionGroup/AppServiceEnvironment/Managed Identity API"),
		},
	},
	{
		// fw-policies-base: 1 network rule; fw-policies-eastus2 (its child):
		// AKS-Global-Requirements 3 + Flux-Requirements 2 application
		// rules, 1 network rule. Node pool prefixes come from the spoke
		// (reference() of its subnet, given with --reference).
		name: "aksbaseline-hub-regionA-policy",
		args: []string{"aksbaseline-hub-regionA-policy/hub-regionA.json", "--policy", "fw-policies-eastus2", "--include-base",
			"--parameters", "location=eastus2", `nodepoolSubnetResourceIds=["/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-enterprise-networking-spokes/providers/Microsoft.Network/virtualNetworks/vnet-spoke-BU0001A0008-00/subnets/snet-clusternodes"]`,
			"--reference", `/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-enterprise-networking-spokes/providers/Microsoft.Network/virtualNetworks/vnet-spoke-BU0001A0008-00/subnets/snet-clusternodes={"addressPrefix": "10.240.0.0/22"}`},
		azureRules: 7,
		flows: []corpusFlow{
			inherited(flow("10.240.0.5 > 198.51.100.53 udp/53", "Allow", "DefaultNetworkRuleCollectionGroup/org-wide-allowed/DNS"), "fw-policies-base"),
			flow("10.240.0.5 > 198.18.20.5 tcp/443", "Allow", "DefaultNetworkRuleCollectionGroup-fw-policies-eastus2/AKS-Global-Requirements/pod-to-api-server"),
			// Application collection 200 before 300: the AKS tag holds mcr.microsoft.com.
			flow("10.240.0.5 > mcr.microsoft.com=192.0.2.60 tcp/443", "Allow", "DefaultApplicationRuleCollectionGroup/AKS-Global-Requirements/service-requirements"),
			flow("10.240.0.5 > github.com=192.0.2.61 tcp/443", "Allow", "DefaultApplicationRuleCollectionGroup/Flux-Requirements/flux-to-github"),
			flow("10.99.0.5 > github.com=192.0.2.61 tcp/443", "Deny", ""),
		},
	},
	{
		// fw-policies-base: 1 network rule; the default hub's child policy has empty groups.
		name:       "aksbaseline-hub-default-policy",
		args:       []string{"aksbaseline-hub-default-policy/hub-default.json", "--policy", "fw-policies-eastus2", "--include-base", "--parameters", "location=eastus2"},
		azureRules: 1,
		flows: []corpusFlow{
			inherited(flow("10.240.0.5 > 198.51.100.53 udp/53", "Allow", "DefaultNetworkRuleCollectionGroup/org-wide-allowed/DNS"), "fw-policies-base"),
			flow("10.240.0.5 > 198.51.100.53 tcp/53", "Deny", ""),
			flow("10.240.0.5 > github.com=192.0.2.61 tcp/443", "Deny", ""),
		},
	},
	{
		// Before firewall policies (January 2021): classic rules,
		// network 1 + 4, application 9 + 2.
		name: "aksbaseline-hub-regionA-classic",
		args: []string{"aksbaseline-hub-regionA-classic/hub-regionA.json",
			"--parameters", "location=eastus2", `nodepoolSubnetResourceIds=["/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-enterprise-networking-spokes/providers/Microsoft.Network/virtualNetworks/vnet-spoke-BU0001A0008-00/subnets/snet-clusternodes"]`,
			"--reference", `snet-clusternodes={"addressPrefix": "10.240.0.0/22"}`},
		azureRules: 16,
		flows: []corpusFlow{
			flow("10.240.0.5 > 198.51.100.53 udp/53", "Allow", "DefaultNetworkRuleCollectionGroup/org-wide-allowed/DNS"),
			flow("10.240.0.5 > 198.18.20.5 udp/1194", "Allow", "DefaultNetworkRuleCollectionGroup/AKS-Global-Requirements/tunnelfront-pod-udp"),
			flow("10.240.0.5 > x.hcp.eastus2.azmk8s.io=192.0.2.62 tcp/443", "Allow", "DefaultApplicationRuleCollectionGroup/AKS-Global-Requirements/nodes-to-api-server"),
			flow("10.240.0.5 > mcr.microsoft.com=192.0.2.60 tcp/443", "Allow", "DefaultApplicationRuleCollectionGroup/AKS-Global-Requirements/microsoft-container-registry"),
			flow("10.240.0.5 > 198.18.20.5 tcp/22", "Deny", ""),
		},
	},
	{
		// Compiled Bicep: the firewall is a module (a nested deployment)
		// deployed when custom_vnet and azureFirewalls are true; network
		// 3 + 1 (acrPrivatePool), application 1 + 2 (certManagerFW).
		name: "akscons-main",
		args: []string{"akscons-main/main.json", "--location", "eastus",
			"--parameters", "resourceName=cwtest", "custom_vnet=true", "azureFirewalls=true", "certManagerFW=true", "acrPrivatePool=true"},
		azureRules: 7,
		flows: []corpusFlow{
			flow("10.240.0.10 > 198.18.10.5 udp/1194", "Allow", "AKSConstructionRuleGroup/CoreAksNetEgress/ControlPlaneUDP"),
			flow("10.240.4.70 > 198.18.40.5 tcp/443", "Allow", "AKSConstructionRuleGroup/CoreAksNetEgress/acr-agentpool"),
			flow("10.240.0.10 > quay.io=192.0.2.70 tcp/443", "Allow", "AKSConstructionRuleGroup/CoreAksHttpEgress/certman-quay"),
			flow("10.240.0.10 > x.hcp.eastus.azmk8s.io=192.0.2.71 tcp/443", "Allow", "AKSConstructionRuleGroup/CoreAksHttpEgress/aks"),
			flow("10.240.0.10 > example.org=192.0.2.72 tcp/443", "Deny", ""),
		},
	},
	{
		// A policy generated from a Check Point export: 1 rule.
		name:       "ans-checkpoint-migration",
		args:       []string{"ans-checkpoint-migration/template.json", "--location", "eastus"},
		azureRules: 1,
		flows: []corpusFlow{
			flow("10.0.1.40 > 10.0.1.37 udp/53", "Allow", "importedFromCheckpoint/from-chkp-net-Accept-0/DNS Azure rule"),
			flow("10.0.1.40 > 10.0.1.38 udp/53", "Deny", ""),
			flow("10.0.1.10 > 10.0.1.37 tcp/53", "Deny", ""),
		},
	},
	{
		// Network 2 + 3, DNAT 2 (to VMs whose dynamic private IPs are given with --reference).
		name: "ans-dns-proxy-hub-spoke",
		args: []string{"ans-dns-proxy-hub-spoke/azuredeploy.json", "--parameters", "@ans-dns-proxy-hub-spoke/azuredeploy.parameters.json", "--location", "westeurope",
			"--public-ip", "HubFirewallPublicIP=203.0.113.50",
			"--reference", `DevVmNic={"ipConfigurations": [{"properties": {"privateIPAddress": "10.0.0.4"}}]}`,
			"--reference", `ProdVmNic={"ipConfigurations": [{"properties": {"privateIPAddress": "10.1.0.4"}}]}`},
		azureRules: 7,
		flows: []corpusFlow{
			// DNAT is evaluated before every network rule.
			dnat(flow("198.51.100.7 > 203.0.113.50 tcp/4001", "DNAT", "DefaultDnatRuleCollectionGroup/VirtualMachineNatRules/DevVm-Rdp-Nat-Rule"), "10.0.0.4:22"),
			flow("10.0.0.5 > 10.1.0.5 tcp/22", "Allow", "DefaultNetworkRuleCollectionGroup/VnetToVnetNetworkRules/Allow-ProductionVNet-DefaultSubnet-To-DevelopmentVNet-DefaultSubnet-Traffic"),
			flow("10.1.0.5 > 198.51.100.1 tcp/443", "Allow", "DefaultNetworkRuleCollectionGroup/VnetToInternet/Allow-ProductionVNet-DefaultSubnet-Internet-Traffic"),
			flow("10.1.0.5 > 198.51.100.1 tcp/22", "Deny", ""),
		},
	},
	{
		// Premium: 2 application rules, both by URL only (never widened to their hosts).
		name:       "ans-premium-github",
		args:       []string{"ans-premium-github/azuredeploy.json", "--parameters", `DevHostPoolIPGroup=["10.50.0.0/24"]`, "--location", "eastus"},
		azureRules: 2,
		skipped:    []string{"DefaultApplicationRuleCollectionGroup/AllowGithub/AllowGitHubBase", "DefaultApplicationRuleCollectionGroup/AllowGithub/AllowGitHubRepo"},
		flows: []corpusFlow{
			flow("10.50.0.5 > github.com=192.0.2.80 tcp/443", "Deny", ""),
			flow("10.50.0.5 > raw.githubusercontent.com=192.0.2.81 tcp/443", "Deny", ""),
			flow("10.50.0.5 > 198.51.100.1 tcp/22", "Deny", ""),
		},
	},
	{
		// Premium: 5 application rules (the WindowsVirtualDesktop tag,
		// four by URL), 3 network rules (two by destination FQDN).
		name:       "ans-premium-wvd",
		args:       []string{"ans-premium-wvd/azuredeploy.json", "--parameters", `WVDHostPoolIPGroup=["10.60.0.0/24"]`, `AD_DNSServers=["10.60.1.4","10.60.1.5"]`, "--location", "eastus"},
		azureRules: 8,
		skipped: []string{"DefaultApplicationRuleCollectionGroup/AllowAltWVD/AllowWVDTag", "DefaultApplicationRuleCollectionGroup/AllowAltWVD/AllowWVDServicebus",
			"DefaultApplicationRuleCollectionGroup/AllowAltWVD/AllowWVDBlob", "DefaultApplicationRuleCollectionGroup/AllowAltWVD/AllowWVDTable", "DefaultApplicationRuleCollectionGroup/AllowAltWVD/AllowWVDQueue"},
		flows: []corpusFlow{
			flow("10.60.0.5 > 10.60.1.4 udp/53", "Allow", "DefaultNetworkRuleCollectionGroup/AllowAdditionalWVDNetwork/AllowADDNS"),
			flow("10.60.0.5 > kms.core.windows.net=198.51.100.16 tcp/1688", "Allow", "DefaultNetworkRuleCollectionGroup/AllowAdditionalWVDNetwork/AllowAzureKMS"),
			flow("10.60.0.5 > rdweb.wvd.microsoft.com=192.0.2.90 tcp/443", "Deny", ""),
		},
	},
	{
		// Two policies; fp-azfw-hub-vnet-1: 5 DNAT rules, one to a public IP.
		name:       "ans-private-ip-dnat",
		args:       []string{"ans-private-ip-dnat/PrivateIpDnatArmTemplateV2.json", "--policy", "fp-azfw-hub-vnet-1", "--location", "eastus", "--public-ip", "pip-1-azfw-hub-vnet-1=203.0.113.61"},
		azureRules: 5,
		flows: []corpusFlow{
			dnat(flow("198.51.100.7 > 203.0.113.61 tcp/53389", "DNAT", "DefaultDnatRuleCollectionGroup/rc-management-inbound/ToVM1-Rdp"), "192.168.0.4:3389"),
			dnat(flow("192.168.0.10 > 10.10.0.4 tcp/8080", "DNAT", "DefaultDnatRuleCollectionGroup/rc-management-inbound/ToVM3-Http"), "172.16.0.4:80"),
			flow("172.16.0.10 > 10.10.0.4 tcp/8080", "Deny", ""),
		},
	},
	{
		// Premium workshop: DNAT 4 + 2 + 3 + 2, spoke 1 network 3 and
		// application 4 (one by web categories), spoke 2 network 1 and
		// application 3 (one by web categories); two empty collections.
		name:       "ans-workshop",
		args:       []string{"ans-workshop/labdeployment.json", "--location", "eastus", "--parameters", "appGwAfdName=netsec", "--public-ip", "pip-azfw-hub-alpineSkiHouse=203.0.113.70"},
		azureRules: 22,
		skipped: []string{"rcg-vnet-spoke-workload-1/spoke-workload-1-applicationRuleCollection/spoke1-to-SearchEnginesandNewsSites",
			"rcg-vnet-spoke-workload-2/spoke-workload-2-applicationRuleCollection/spoke2-to-SearchEnginesandNewsSites"},
		flows: []corpusFlow{
			dnat(flow("198.51.100.7 > 203.0.113.70 tcp/8080", "DNAT", "rcg-vnet-hub/OWASP-DNAT/OWASP-VM-1-HTTP"), "10.0.200.5:3000"),
			flow("10.0.100.5 > 10.0.200.5 tcp/445", "Allow", "rcg-vnet-spoke-workload-1/spoke-workload-1-networkRuleCollection/spoke1-to-spoke2-snet1-SMB"),
			flow("10.0.100.5 > download.windowsupdate.com=192.0.2.11 tcp/443", "Allow", "rcg-vnet-spoke-workload-1/spoke-workload-1-applicationRuleCollection/spoke1-to-WindowsUpdate"),
			flow("10.0.200.40 > example.org=192.0.2.72 tcp/443", "Allow", "rcg-vnet-spoke-workload-2/spoke-workload-2-applicationRuleCollection/spoke2-to-docker"),
			flow("10.0.100.5 > www.bing.com=192.0.2.20 tcp/443", "Deny", ""),
		},
	},
	{
		// DNAT 1, network 2 + 1, application 1; the public IP's name
		// comes from uniqueString(resourceGroup().id).
		name: "ans-forced-tunnel-lab",
		args: []string{"ans-forced-tunnel-lab/azureLinkedTemplate.json", "--location", "eastus", "-g", "rg-fwlab", "--subscription", "11111111-2222-3333-4444-555555555555",
			"--public-ip", "pip-azfw-vnet-hub-securedbtvjucksmqii6=203.0.113.80"},
		azureRules: 5,
		flows: []corpusFlow{
			dnat(flow("198.51.100.7 > 203.0.113.80 udp/33899", "DNAT", "DefaultDnatRuleCollectionGroup/RemoteIn/RDP"), "192.168.2.4:3389"),
			flow("192.168.0.5 > 10.100.0.5 tcp/445", "Allow", "DefaultNetworkRuleCollectionGroup/east-west/azure-to-onprem"),
			flow("192.168.0.5 > 23.102.135.246 tcp/1688", "Allow", "DefaultNetworkRuleCollectionGroup/internet/to-kms"),
			flow("192.168.0.5 > owaspdirect.azurewebsites.net=192.0.2.100 tcp/443", "Allow", "DefaultApplicationRuleCollectionGroup/Internet/internet"),
		},
	},
	{
		// API 2019-06-01 ruleGroups nested in the policy: 4 NAT rules,
		// a filter rule with 3 network conditions, one with 1 application condition.
		name:       "ans-netsec-demo-standard",
		args:       []string{"ans-netsec-demo-standard/AzNetSecdeploy.json", "--location", "eastus", "--public-ip", "SOCNSFWPIP=203.0.113.90"},
		azureRules: 8,
		flows: []corpusFlow{
			dnat(flow("198.51.100.7 > 203.0.113.90 tcp/22", "DNAT", "DefaultDnatRuleCollectionGroup/VM-Kali/DNATRule"), "10.0.27.68:22"),
			flow("10.0.27.4 > 10.0.27.68 tcp/445", "Allow", "DefaultNetworkRuleCollectionGroup/IntraVNETAccess/SMB"),
			flow("10.0.28.4 > www.bing.com=192.0.2.20 tcp/443", "Allow", "DefaultApplicationRuleCollectionGroup/Internet-Access/SearchEngineAccess"),
		},
	},
	{
		// The main template deploys twelve linked templates (all given);
		// Networking/firewall.json: network 4 + 1, application 4 (one by
		// URL, one by web categories).
		name: "ans-netsec-demo-firewall",
		args: []string{"ans-netsec-demo-firewall/AzNetSecdeploy.json", "ans-netsec-demo-firewall/Networking/firewall.json", "ans-netsec-demo-firewall/Networking/keyVault.json",
			"ans-netsec-demo-firewall/Networking/vNets.json", "ans-netsec-demo-firewall/Networking/bastion.json", "ans-netsec-demo-firewall/WebApp/appService.json",
			"ans-netsec-demo-firewall/WebApp/gateway.json", "ans-netsec-demo-firewall/WebApp/frontdoor.json", "ans-netsec-demo-firewall/VMs/kaliVM.json",
			"ans-netsec-demo-firewall/VMs/win11VM.json", "ans-netsec-demo-firewall/VMs/win2019VM.json", "ans-netsec-demo-firewall/VMs/vmCerts.json",
			"ans-netsec-demo-firewall/Monitoring/diagSettings.json",
			"--location", "eastus", "--parameters", "resourceNamePrefix=netsec", "resourceNameSuffix=lab", "defaultUserName=azureuser", "defaultPassword=x"},
		azureRules: 9,
		skipped:    []string{"DefaultApplicationRuleCollectionGroup/Internet-Access/NetSec-TechCommunity", "DefaultApplicationRuleCollectionGroup/Internet-Access/Allowed-WebCategories"},
		flows: []corpusFlow{
			flow("10.0.24.5 > 198.51.100.1 tcp/8080", "Allow", "DefaultNetworkRuleCollectionGroup/DTF-NetworkRule/DefendTheFlag"),
			flow("198.51.100.7 > 10.0.28.4 tcp/80", "Allow", "DefaultNetworkRuleCollectionGroup/IntraVNETandHTTPOutAccess/HTTP"),
			flow("10.0.27.4 > download.windowsupdate.com=192.0.2.11 tcp/443", "Allow", "DefaultApplicationRuleCollectionGroup/Internet-Access/Allow-WindowsUpdate"),
			flow("10.0.27.4 > techcommunity.microsoft.com=192.0.2.110 tcp/443", "Deny", ""),
		},
	},
}

var (
	summaryRe = regexp.MustCompile(`imported (\d+) rule collection groups, (\d+) rules`)
	looserRe  = regexp.MustCompile(`(\d+) may be LOOSER`)
	skippedRe = regexp.MustCompile(`(?m)^warning: (.+?): .*(?:rule skipped|RULE SKIPPED): (STRICTER|LOOSER)`)
)

// TestCorpus imports every template of the corpus as a user would, checks
// that the rules Azure deploys are all imported or each named as skipped,
// that the result validates, and asks explain about flows whose outcome
// follows from Azure's documented processing order.
func TestCorpus(t *testing.T) {
	if len(corpusCases) < 15 {
		t.Fatalf("the corpus has %d templates, want at least 15", len(corpusCases))
	}
	tags := corpusDir + "service-tags.json"
	for _, tc := range corpusCases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "policy.yaml")
			var args []string
			for i, a := range tc.args {
				if i == 0 || strings.HasSuffix(a, ".json") && !strings.HasPrefix(a, "@") && !strings.Contains(a, "=") {
					a = corpusDir + a
				}
				if strings.HasPrefix(a, "@") {
					a = "@" + corpusDir + a[1:]
				}
				args = append(args, a)
			}
			_, stderr, code := runImportCLI(t, "", append(append([]string{"import", "azure"}, args...), "--service-tags", tags, "-o", out)...)
			if code != 0 {
				t.Fatalf("import: exit %d:\n%s", code, stderr)
			}
			m := summaryRe.FindStringSubmatch(stderr)
			if m == nil {
				t.Fatalf("no summary:\n%s", stderr)
			}
			imported, _ := strconv.Atoi(m[2])
			var skipped []string
			for _, s := range skippedRe.FindAllStringSubmatch(stderr, -1) {
				skipped = append(skipped, s[1])
			}
			sort.Strings(skipped)
			want := append([]string(nil), tc.skipped...)
			sort.Strings(want)
			if strings.Join(skipped, "\n") != strings.Join(want, "\n") {
				t.Errorf("rules named as skipped:\n  %s\nwant:\n  %s\n%s", strings.Join(skipped, "\n  "), strings.Join(want, "\n  "), stderr)
			}
			if imported+len(skipped) != tc.azureRules {
				t.Errorf("Azure deploys %d rules; imported %d + %d named as skipped:\n%s", tc.azureRules, imported, len(skipped), stderr)
			}
			looser := 0
			if m := looserRe.FindStringSubmatch(stderr); m != nil {
				looser, _ = strconv.Atoi(m[1])
			}
			// --strict refuses exactly the imports with a warning that may be looser.
			_, serr, scode := runImportCLI(t, "", append(append([]string{"import", "azure"}, args...), "--service-tags", tags, "--strict", "-o", out+".strict")...)
			if (scode != 0) != (looser > 0) {
				t.Errorf("--strict: exit %d with %d warnings that may be LOOSER:\n%s", scode, looser, serr)
			}
			t.Logf("Azure deploys %d rules: %d imported, %d named as skipped; %d warnings may be LOOSER; %d explain flows", tc.azureRules, imported, len(skipped), looser, len(tc.flows))
			if len(tc.flows) < 3 {
				t.Errorf("%d explain flows, want at least 3", len(tc.flows))
			}
			for _, f := range tc.flows {
				args := append([]string{"explain", "--policy", out, "--service-tags", tags, "--json"}, f.args...)
				stdout, errs, code := runImportCLI(t, "", args...)
				if code != 0 {
					t.Errorf("explain %v: exit %d: %s", f.args, code, errs)
					continue
				}
				var e struct {
					Action, RuleCollectionGroup, RuleCollection, Rule, BasePolicy string
					TranslatedAddress                                             string
					TranslatedPort                                                int
				}
				if err := json.Unmarshal([]byte(stdout), &e); err != nil {
					t.Fatalf("explain %v: %v\n%s", f.args, err, stdout)
				}
				rule := ""
				if e.Rule != "" {
					rule = e.RuleCollectionGroup + "/" + e.RuleCollection + "/" + e.Rule
				}
				to := ""
				if e.TranslatedAddress != "" {
					to = e.TranslatedAddress + ":" + strconv.Itoa(e.TranslatedPort)
				}
				if e.Action != f.action || rule != f.rule || e.BasePolicy != f.base || to != f.to {
					t.Errorf("explain %s:\n  got  %s %q base %q to %q\n  want %s %q base %q to %q", strings.Join(f.args, " "), e.Action, rule, e.BasePolicy, to, f.action, f.rule, f.base, f.to)
				}
			}
		})
	}
}
