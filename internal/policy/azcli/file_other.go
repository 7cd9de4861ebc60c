//go:build !unix

package azcli

import (
	"io/fs"
	"os"
)

func keepOwner(*os.File, fs.FileInfo) {}
