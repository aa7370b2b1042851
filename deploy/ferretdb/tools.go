//go:build tools

// Package tools pins the FerretDB 1.x release that development and tests run.
// Built with `go install github.com/FerretDB/FerretDB/cmd/ferretdb` from this
// directory (scripts/ensure-ferretdb), so go.sum fixes every dependency.
package tools

import _ "github.com/FerretDB/FerretDB/cmd/ferretdb"
