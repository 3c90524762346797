package main

// The dynamic-provider plugin, `pulumi-resource-pulumi-nodejs`: the engine starts it for every
// `pulumi.dynamic.Resource`, in the project's directory. Upstream ships a shell shim that runs
// `node <@pulumi/pulumi/cmd/dynamic-provider resolved from that directory>`; in a project that
// is not a Node.js one (Pulumi YAML, Python...) using a Node.js component package, nothing
// resolves there and every dynamic resource fails with "Cannot find module
// '@pulumi/pulumi/cmd/dynamic-provider'" (pulumi/pulumi#5455, open). This does the same
// resolution first, and then falls back to the directories of the project's local packages
// (Pulumi.yaml `packages:` given by path): the component package brings its own SDK.

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/pulumi/pulumi/sdk/v3/go/common/workspace"
)

const (
	// The plugin name the engine looks for on PATH for dynamic resources.
	dynamicProviderName = "pulumi-resource-pulumi-nodejs"
	// The module it runs, resolved as Node resolves it.
	dynamicProviderModule = "@pulumi/pulumi/cmd/dynamic-provider"
)

func dynamicProviderMain() {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: could not find `node` on PATH; install Node.js >= 20: %v\n", dynamicProviderName, err)
		os.Exit(1)
	}
	cwd, err := os.Getwd()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", dynamicProviderName, err)
		os.Exit(1)
	}
	script, err := resolveDynamicProvider(nodeBin, cwd)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", dynamicProviderName, err)
		os.Exit(1)
	}
	// Replace this process: the engine reads the provider's port from node's stdout and
	// signals node directly.
	argv := append([]string{nodeBin, script}, os.Args[1:]...)
	if err := syscall.Exec(nodeBin, argv, os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "%s: could not start %s %s: %v\n", dynamicProviderName, nodeBin, script, err)
		os.Exit(1)
	}
}

// resolveDynamicProvider finds the dynamic-provider script: from dir (NODE_PATH included, as
// upstream's shim), else from each local package of the Pulumi project that dir belongs to.
func resolveDynamicProvider(nodeBin, dir string) (string, error) {
	tried := []string{dir}
	if script, ok := nodeResolve(nodeBin, dir, dynamicProviderModule); ok {
		return script, nil
	}
	for _, pkgDir := range localPackageDirs(dir) {
		tried = append(tried, pkgDir)
		if script, ok := nodeResolve(nodeBin, pkgDir, dynamicProviderModule); ok {
			return script, nil
		}
	}
	return "", fmt.Errorf("cannot find module '%s' from %s. Fix: run `npm install` in the Node.js package "+
		"that creates these dynamic resources (its node_modules must hold @pulumi/pulumi), add that package "+
		"to Pulumi.yaml `packages:` by its path, or set NODE_PATH to its node_modules directory",
		dynamicProviderModule, strings.Join(tried, ", "))
}

// nodeResolve is `require.resolve(module)` run by node in dir.
func nodeResolve(nodeBin, dir, module string) (string, bool) {
	cmd := exec.Command(nodeBin, "-e", "console.log(require.resolve(process.argv[1]))", module)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(out)), true
}

// localPackageDirs lists the directories of the packages the Pulumi project around dir names by a
// local path in its `packages:` section, in name order; none when there is no such project.
func localPackageDirs(dir string) []string {
	projectFile, err := workspace.DetectProjectPathFrom(dir)
	if err != nil || projectFile == "" {
		return nil
	}
	project, err := workspace.LoadProject(projectFile)
	if err != nil {
		return nil
	}
	projectDir := filepath.Dir(projectFile)
	specs := project.GetPackageSpecs()
	var dirs []string
	for _, name := range slices.Sorted(maps.Keys(specs)) {
		source := specs[name].Source
		if !filepath.IsAbs(source) && !strings.HasPrefix(source, ".") {
			continue // a registry name or a git URL: not a directory here
		}
		if !filepath.IsAbs(source) {
			source = filepath.Join(projectDir, source)
		}
		if fi, err := os.Stat(source); err == nil && fi.IsDir() {
			dirs = append(dirs, source)
		}
	}
	return dirs
}
