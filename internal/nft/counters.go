package nft

import (
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// Counters reads the decision counters of clusterwall's table from the
// kernel (the `counter` of every rule tagged "cw:..."), summed per tag as
// State.Counters does. Unlike Show it reads only the rules of the live
// slot (not the sets' elements), so it is cheap enough for every metrics
// scrape. A missing table yields no counters.
func (r *NetlinkRunner) Counters() ([]RuleCounter, error) {
	r.mu.Lock()
	name := r.table()
	r.mu.Unlock()
	ts, err := r.listTable(name)
	if err != nil || !ts.exists {
		return nil, err
	}
	c, err := r.conn()
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	table := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	st := &State{Table: name, Present: true}
	for _, ch := range ts.chains {
		if sl := slotOf(ch.Name); sl != "" && sl != ts.live {
			continue // the idle slot of the double buffer
		}
		rules, err := c.GetRules(table, ch)
		if err != nil {
			return nil, kernelErr("list rules of "+ch.Name, err)
		}
		cs := ChainState{Name: unslot(ch.Name)}
		for _, ru := range rules {
			cm, ok := userdata.GetString(ru.UserData, userdata.TypeComment)
			if !ok || !strings.HasPrefix(cm, "cw:") {
				continue
			}
			for _, e := range ru.Exprs {
				if cnt, ok := e.(*expr.Counter); ok {
					cs.Rules = append(cs.Rules, RuleState{Handle: ru.Handle, Comment: cm, HasCounter: true, Packets: cnt.Packets, Bytes: cnt.Bytes})
					break
				}
			}
		}
		st.Chains = append(st.Chains, cs)
	}
	return st.Counters(), nil
}
