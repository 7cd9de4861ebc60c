package e2e

// kindsPolicy has every rule kind in both families, a Deny collection that
// outranks an Allow collection, and a group whose priority beats a better
// collection priority in a later group. The shared lab enforces it.
//
// Lab addresses (docs/lab.md): ghcr.io 192.0.2.10, mcr 192.0.2.11,
// example.org 192.0.2.14, raw.githubusercontent.com 192.0.2.16,
// nonazure 192.0.2.99, tunnel.eastus.azure.com 198.18.10.5 (in the service
// tag AzureCloud.eastus); IPv6 2001:db8:192::<same>, 2001:db8:ac:10::5.
const kindsPolicy = `name: e2e-kinds
serviceTags: @TAGS@
ruleCollectionGroups:
  - name: publish
    priority: 100
    ruleCollections:
      - name: dnat
        kind: DNAT
        priority: 100
        action: DNAT
        rules:
          - name: web4
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [203.0.113.32]
            destinationPorts: ['80']
            translatedAddress: 10.42.1.100
            translatedPort: '80'
          - name: web6
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: ['2001:db8:cafe::32']
            destinationPorts: ['80']
            translatedAddress: '2001:db8:42:1::100'
            translatedPort: '80'
          - name: alt4
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [203.0.113.32]
            destinationPorts: ['8080']
            translatedAddress: 10.42.1.100
            translatedPort: '80'
          - name: api4
            protocols: [TCP]
            sourceAddresses: [198.51.100.7/32]
            destinationAddresses: [203.0.113.32]
            destinationPorts: ['443']
            translatedAddress: 10.42.1.200
            translatedPort: '443'
          - name: api6
            protocols: [TCP]
            sourceAddresses: ['2001:db8:c11e::7/128']
            destinationAddresses: ['2001:db8:cafe::32']
            destinationPorts: ['443']
            translatedAddress: '2001:db8:42:1::200'
            translatedPort: '443'
  # Group priority 150 beats group 200 whatever the collection priorities.
  - name: guard
    priority: 150
    ruleCollections:
      - name: late-allow
        kind: Network
        priority: 65000
        action: Allow
        rules:
          - name: mcr-http
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.11, '2001:db8:192::11']
            destinationPorts: ['80']
      - name: late-deny
        kind: Network
        priority: 64000
        action: Deny
        rules:
          - name: raw-http
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.16, '2001:db8:192::16']
            destinationPorts: ['80']
  - name: net
    priority: 200
    ruleCollections:
      # Collection priority 100 beats the Allow collection's 200.
      - name: blocklist
        kind: Network
        priority: 100
        action: Deny
        rules:
          - name: no-example
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.14, '2001:db8:192::14']
            destinationPorts: ['80', '443']
          - name: no-mcr
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.11, '2001:db8:192::11']
            destinationPorts: ['80']
          - name: no-udp4
            protocols: [UDP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.99]
            destinationPorts: ['1194']
          - name: no-ping
            protocols: [ICMP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.14, '2001:db8:192::14']
            destinationPorts: ['*']
      - name: egress
        kind: Network
        priority: 200
        action: Allow
        rules:
          - name: web
            protocols: [TCP]
            sourceAddresses: [10.42.1.0/24, '2001:db8:42:1::/64']
            destinationAddresses: [192.0.2.0/24, '2001:db8:192::/64']
            destinationPorts: ['80', '443']
          - name: tunnel-tcp
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [AzureCloud.eastus]
            destinationPorts: ['9000']
          - name: tunnel-udp
            protocols: [UDP]
            sourceAddresses: ['*']
            destinationAddresses: [AzureCloud.eastus]
            destinationPorts: ['1194']
          - name: nonazure-udp
            protocols: [UDP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.99, '2001:db8:192::99']
            destinationPorts: ['1194']
          - name: ping
            protocols: [ICMP]
            sourceAddresses: [10.42.1.0/24, '2001:db8:42:1::/64']
            destinationAddresses: [192.0.2.0/24, '2001:db8:192::/64']
            destinationPorts: ['*']
`

// streamPolicy allows the echo servers the reload tests run in inet
// (192.0.2.99 / 2001:db8:192::99 ports 9100 and 9101), HTTP to ghcr.io, and
// TCP 20000+N to a documentation address (the part reloads change). TOGGLE
// is replaced by a port; KEEP by the rules that only some policies have.
const streamPolicy = `name: e2e-stream
ruleCollectionGroups:
  - name: net
    priority: 200
    ruleCollections:
      - name: egress
        kind: Network
        priority: 200
        action: Allow
        rules:
          - name: web
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.10, '2001:db8:192::10']
            destinationPorts: ['80']
          - name: stream-keep
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.99, '2001:db8:192::99']
            destinationPorts: ['9101']
          - name: toggle
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.200]
            destinationPorts: ['TOGGLE']
KEEP`

// streamCutRule is the KEEP part of streamPolicy that allows port 9100.
const streamCutRule = `          - name: stream-cut
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.99, '2001:db8:192::99']
            destinationPorts: ['9100']
`
