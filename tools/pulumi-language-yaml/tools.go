//go:build tools

// This module only pins the YAML language host that scripts/engine.sh builds
// (github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml). It is a module of its own so that
// pulumi-yaml's dependency graph never moves the Pulumi version that
// tools/pulumi-language-nodejs pins for the CLI and our Node.js language host.
package tools

import _ "github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml"
