package azure

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// ParseParameters reads `az deployment group create --parameters` values,
// later ones overriding earlier ones as az does:
//
//	@FILE          a deployment parameters file ({"parameters": {"name": {"value": ...}}},
//	               or the bare {"name": {"value": ...}} object)
//	NAME=VALUE     a value, converted to the parameter's declared type
//	NAME=@FILE     the content of FILE as the value
//	{...}          inline JSON in the parameters file format
//
// readFile reads a file; errors name the file, line and column.
func ParseParameters(args []string, readFile func(string) ([]byte, error)) (map[string]ParamValue, error) {
	out := map[string]ParamValue{}
	var errs policy.ErrorList
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "@"):
			name := a[1:]
			data, err := readFile(name)
			if err != nil {
				errs = append(errs, &policy.Error{Pos: policy.Pos{File: name}, Msg: err.Error()})
				continue
			}
			errs = append(errs, paramsFile(&source{name: name, data: data}, out)...)
		case strings.HasPrefix(strings.TrimSpace(a), "{"):
			errs = append(errs, paramsFile(&source{name: "--parameters", data: []byte(a)}, out)...)
		default:
			name, val, ok := strings.Cut(a, "=")
			name = strings.TrimSpace(name)
			if !ok || name == "" {
				errs = append(errs, &policy.Error{Msg: fmt.Sprintf("--parameters %q: expected NAME=VALUE, @FILE or a JSON object", a)})
				continue
			}
			from := "--parameters " + name
			if strings.HasPrefix(val, "@") {
				file := val[1:]
				data, err := readFile(file)
				if err != nil {
					errs = append(errs, &policy.Error{Pos: policy.Pos{File: file}, Msg: err.Error()})
					continue
				}
				val = string(data)
				from += "=@" + file
			}
			out[strings.ToLower(name)] = ParamValue{n: &node{kind: jString, str: val}, text: true, from: from}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// paramsFile reads a deployment parameters file into out.
func paramsFile(src *source, out map[string]ParamValue) policy.ErrorList {
	roots, err := parseJSON(src)
	if err != nil {
		if l, ok := err.(policy.ErrorList); ok {
			return l
		}
		return policy.ErrorList{{Pos: policy.Pos{File: src.name}, Msg: err.Error()}}
	}
	if len(roots) != 1 || roots[0].kind != jObject {
		return policy.ErrorList{{Pos: roots[0].pos(), Msg: "a parameters file holds one JSON object: {\"parameters\": {\"NAME\": {\"value\": ...}}}"}}
	}
	ps := roots[0]
	if p := ps.lookup("parameters"); p != nil && (ps.lookup("$schema") != nil || ps.lookup("contentVersion") != nil || len(ps.keys) == 1) {
		ps = p
	}
	if ps.kind != jObject {
		return policy.ErrorList{{Pos: ps.pos(), Msg: "parameters: expected an object of NAME: {\"value\": ...}"}}
	}
	var errs policy.ErrorList
	for i, k := range ps.keys {
		if strings.HasPrefix(k, "$") {
			continue
		}
		pv := ps.vals[i]
		from := src.name + " (" + k + ")"
		switch {
		case pv.kind == jObject && pv.lookup("value") != nil:
			out[strings.ToLower(k)] = ParamValue{n: pv.lookup("value"), from: from}
		case pv.kind == jObject && pv.lookup("reference") != nil:
			secret := ""
			if r := pv.lookup("reference"); r != nil {
				if s := r.lookup("secretName"); s != nil && s.kind == jString {
					secret = " " + s.str
				}
			}
			out[strings.ToLower(k)] = ParamValue{n: unknownNode(pv, fmt.Sprintf("parameter %q comes from the Key Vault secret%s", k, secret), "give it with --parameters "+k+"=VALUE"), from: from}
		default:
			errs = append(errs, &policy.Error{Pos: pv.pos(), Msg: fmt.Sprintf("parameter %q: expected {\"value\": ...} or {\"reference\": ...}", k)})
		}
	}
	return errs
}

// ParsePublicIPs reads --public-ip NAME=ADDRESS values.
func ParsePublicIPs(args []string) (map[string]string, error) {
	out := map[string]string{}
	for _, a := range args {
		name, addr, ok := strings.Cut(a, "=")
		name, addr = strings.TrimSpace(name), strings.TrimSpace(addr)
		if !ok || name == "" {
			return nil, fmt.Errorf("--public-ip %q: expected NAME=ADDRESS (the public IP resource's name and the address Azure gave it)", a)
		}
		ip, err := netip.ParseAddr(addr)
		if err != nil {
			return nil, fmt.Errorf("--public-ip %s: %q is not an IP address", name, addr)
		}
		out[name] = ip.String()
	}
	return out, nil
}

// ParseReferences reads --reference NAME=JSON values: the deployed state of
// a resource the template reads with reference() but does not deploy
// (NAME is its resource ID or name; JSON what reference() returns, e.g.
// {"addressPrefix": "10.240.0.0/22"} for a subnet).
func ParseReferences(args []string) (map[string]*node, error) {
	out := map[string]*node{}
	for _, a := range args {
		name, js, ok := strings.Cut(a, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("--reference %q: expected NAME=JSON (a resource ID or name, and its properties as reference() returns them)", a)
		}
		roots, err := parseJSON(&source{name: "--reference " + name, data: []byte(js)})
		if err != nil || len(roots) != 1 || roots[0].kind != jObject {
			return nil, fmt.Errorf("--reference %s: %q is not a JSON object", name, js)
		}
		roots[0].runtime = name
		out[name] = roots[0]
	}
	return out, nil
}
