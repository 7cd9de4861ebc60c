package policy

import (
	"fmt"
	"strings"
)

// Error is one problem in a policy, located by file position when the policy
// came from a file and always by field path.
type Error struct {
	Pos  Pos
	Path string // e.g. ruleCollectionGroups[0].ruleCollections[1].rules[2].destinationPorts[0]
	Msg  string
}

func (e *Error) Error() string {
	switch {
	case e.Pos.Line > 0:
		return fmt.Sprintf("%s: %s", e.Pos, e.Msg)
	case e.Pos.File != "" && e.Path != "":
		return fmt.Sprintf("%s: %s: %s", e.Pos.File, e.Path, e.Msg)
	case e.Path != "":
		return fmt.Sprintf("%s: %s", e.Path, e.Msg)
	case e.Pos.File != "":
		return fmt.Sprintf("%s: %s", e.Pos.File, e.Msg)
	}
	return e.Msg
}

// ErrorList is every problem found in a policy, in file order.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Err returns l as an error, or nil when it is empty.
func (l ErrorList) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}
