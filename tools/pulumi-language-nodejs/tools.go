//go:build tools

// This file pins the Pulumi CLI to the same go.mod/go.sum as the language host, so that
// scripts/engine.sh builds `pulumi` (github.com/pulumi/pulumi/pkg/v3/cmd/pulumi) and our
// language host from ONE verified dependency graph: CLI, language host and the SDK protocol
// stubs cannot drift apart. The build tag keeps it out of the language host binary.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
