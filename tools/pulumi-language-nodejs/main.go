// pulumi-language-nodejs: a minimal Node.js language host for the Pulumi engine, written for
// this project.
//
// Why it exists: the upstream language host lives in its own Go module
// (github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3), which the module proxy
// available to our build machines refuses to serve. The engine (`pulumi`) and the protocol
// stubs (sdk/v3/proto/go) ARE served, so we implement the LanguageRuntime service ourselves.
//
// Scope: exactly what `pulumi preview|up|refresh|destroy` need to run a JavaScript or
// TypeScript program with `runtime: nodejs`:
//   - the plugin handshake (print the gRPC port on stdout, serve until killed);
//   - GetRequiredPackages/GetRequiredPlugins (resource plugins declared by installed npm
//     packages, `"pulumi": {"resource": true}` in their package.json);
//   - Run: start `node <sdk>/cmd/run` with the flags and environment variables the
//     @pulumi/pulumi run script reads (see node_modules/@pulumi/pulumi/cmd/run/index.js);
//   - RunPlugin: start a source-based plugin (a directory with PulumiPlugin.yaml, `runtime:
//     nodejs`, e.g. this package as a component provider) with `node <sdk>/cmd/run-plugin`;
//   - InstallDependencies, About, GetProgramDependencies, RuntimeOptionsPrompts: small but
//     honest versions, so `pulumi install` and `pulumi about` work.
//
// Run as `pulumi-resource-pulumi-nodejs` (scripts/engine.sh installs a copy of this binary under
// that name), it is the dynamic-provider plugin instead: see dynamicProviderMain.
//
// Deliberately left out (codes.Unimplemented): code generation, packing, policy packs (also
// as RunPlugin of kind analyzer), and the synchronous-invoke pipes of the upstream host (the
// SDK only uses them for the deprecated synchronous `invoke`; it talks to the resource
// monitor directly).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

const (
	// Path of the SDK's run script below a node_modules directory.
	runScript = "@pulumi/pulumi/cmd/run"
	// The same for plugins (RunPlugin): it loads the plugin's package and, when it exports
	// ComponentResource classes, serves them as a component provider.
	runPluginScript = "@pulumi/pulumi/cmd/run-plugin"

	// The SDK reads its configuration and the list of secret keys from these variables
	// (runtime/config.js in @pulumi/pulumi).
	configEnv           = "PULUMI_CONFIG"
	configSecretKeysEnv = "PULUMI_CONFIG_SECRET_KEYS"

	// The SDK's run script exits with this code after it has already logged an actionable
	// error; the engine must then stop without printing a second, generic message.
	exitCodeAlreadyReported = 32

	// How long node gets to exit after the engine cancels a run before it is killed.
	cancelGraceDelay = 10 * time.Second
)

func main() {
	if filepath.Base(os.Args[0]) == dynamicProviderName {
		dynamicProviderMain()
		return
	}
	// The engine passes its own gRPC address as the last positional argument. Older engines
	// also pass these flags; accept them so that they do not abort flag parsing.
	_ = flag.String("tracing", "", "Zipkin-compatible tracing endpoint (accepted, not used)")
	_ = flag.String("root", "", "project root directory (accepted, not used; RunRequest carries it)")
	printVersion := flag.Bool("version", false, "print the version and exit (used by scripts/engine.sh)")
	flag.Parse()
	if *printVersion {
		fmt.Println(version.Version)
		return
	}

	host := &languageHost{}
	if args := flag.Args(); len(args) > 0 {
		host.engineAddress = args[len(args)-1]
	}

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, host)
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-nodejs: could not start the gRPC server: %v\n", err)
		os.Exit(1)
	}

	// The engine reads the port from our first line of stdout.
	fmt.Printf("%d\n", handle.Port)

	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-nodejs: gRPC server stopped: %v\n", err)
		os.Exit(1)
	}
}

type languageHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	mu            sync.Mutex
	engineAddress string
}

func (h *languageHost) engine() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.engineAddress
}

// Handshake is only used when the engine attaches to an already running host; it then tells
// us its address instead of passing it on the command line.
func (h *languageHost) Handshake(
	_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if req.GetEngineAddress() != "" {
		h.engineAddress = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *languageHost) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	// version.Version is stamped with -ldflags by scripts/engine.sh, the same as the CLI's.
	return &pulumirpc.PluginInfo{Version: strings.TrimPrefix(version.Version, "v")}, nil
}

// nodeOptions are the `runtime.options` of Pulumi.yaml that change how a program is run.
type nodeOptions struct {
	typescript   bool
	tsconfigPath string
	nodeArgs     []string
}

func parseOptions(info *pulumirpc.ProgramInfo) (nodeOptions, error) {
	// TypeScript through ts-node is on unless a project turns it off, as upstream.
	opts := nodeOptions{typescript: true}
	if info == nil || info.GetOptions() == nil {
		return opts, nil
	}
	raw := info.GetOptions().AsMap()
	if v, ok := raw["typescript"]; ok {
		b, isBool := v.(bool)
		if !isBool {
			return opts, fmt.Errorf("Pulumi.yaml runtime.options.typescript is %v (%T); allowed: true or false", v, v)
		}
		opts.typescript = b
	}
	if v, ok := raw["tsconfig"]; ok {
		s, isString := v.(string)
		if !isString {
			return opts, fmt.Errorf("Pulumi.yaml runtime.options.tsconfig is %v (%T); allowed: a file path string", v, v)
		}
		opts.tsconfigPath = s
	}
	if v, ok := raw["nodeargs"]; ok {
		s, isString := v.(string)
		if !isString {
			return opts, fmt.Errorf("Pulumi.yaml runtime.options.nodeargs is %v (%T); allowed: a string of node flags", v, v)
		}
		// Space separated; quoting is not supported by this host (upstream uses shlex).
		opts.nodeArgs = strings.Fields(s)
	}
	return opts, nil
}

// findUp returns the first <dir>/<rel> that exists, walking from dir to the filesystem root,
// the way Node resolves packages from node_modules.
func findUp(dir, rel string) (string, bool) {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		candidate := filepath.Join(d, rel)
		if _, err := os.Stat(candidate); err == nil {
			return candidate, true
		}
		if parent := filepath.Dir(d); parent == d {
			return "", false
		}
	}
}

func programDirectory(info *pulumirpc.ProgramInfo, pwd string) string {
	if info != nil && info.GetProgramDirectory() != "" {
		return info.GetProgramDirectory()
	}
	return pwd
}

func (h *languageHost) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := req.GetInfo()
	programDir := programDirectory(info, req.GetPwd())
	entryPoint := "."
	if info != nil && info.GetEntryPoint() != "" {
		entryPoint = info.GetEntryPoint()
	} else if req.GetProgram() != "" { //nolint:staticcheck // older engines only fill Program
		entryPoint = req.GetProgram() //nolint:staticcheck
	}

	nodeBin, err := exec.LookPath("node")
	if err != nil {
		return &pulumirpc.RunResponse{Error: "could not find `node` on PATH; install Node.js >= 20 and retry: " +
			err.Error()}, nil
	}

	runPath := os.Getenv("PULUMI_LANGUAGE_NODEJS_RUN_PATH")
	if runPath == "" {
		found, ok := findUp(programDir, filepath.Join("node_modules", runScript))
		if !ok {
			return &pulumirpc.RunResponse{Error: fmt.Sprintf(
				"the Pulumi Node.js SDK is not installed for the program in %s: no node_modules/%s "+
					"there or in a parent directory; run `npm install` (package @pulumi/pulumi) and retry",
				programDir, runScript)}, nil
		}
		runPath = found
	}

	opts, err := parseOptions(info)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}

	config := req.GetConfig()
	if config == nil {
		config = map[string]string{}
	}
	configJSON, err := json.Marshal(config)
	if err != nil {
		return nil, fmt.Errorf("serializing the stack configuration: %w", err)
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secretKeysJSON, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, fmt.Errorf("serializing the secret configuration keys: %w", err)
	}

	// Flags understood by @pulumi/pulumi/cmd/run (minimist; see its usage()).
	args := append([]string{}, opts.nodeArgs...)
	args = append(args, runPath)
	flagArg := func(name, value string) {
		if value != "" {
			args = append(args, "--"+name+"="+value)
		}
	}
	flagArg("monitor", req.GetMonitorAddress())
	flagArg("engine", h.engine())
	flagArg("organization", req.GetOrganization())
	flagArg("project", req.GetProject())
	flagArg("stack", req.GetStack())
	if info != nil {
		flagArg("root-directory", info.GetRootDirectory())
	}
	flagArg("pwd", programDir)
	flagArg("parallel", strconv.Itoa(int(req.GetParallel())))
	if req.GetDryRun() {
		args = append(args, "--dry-run")
	}
	args = append(args, entryPoint)
	args = append(args, req.GetArgs()...)

	env := append(os.Environ(),
		configEnv+"="+string(configJSON),
		configSecretKeysEnv+"="+string(secretKeysJSON),
	)
	if opts.typescript {
		env = append(env, "PULUMI_NODEJS_TYPESCRIPT=true")
	}
	if opts.tsconfigPath != "" {
		env = append(env, "PULUMI_NODEJS_TSCONFIG_PATH="+opts.tsconfigPath)
	}

	// The RPC context ends when the engine cancels the run or goes away: then the program
	// must stop too, first politely (SIGTERM) and, after a grace period, for good.
	cmd := exec.CommandContext(ctx, nodeBin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = cancelGraceDelay
	cmd.Dir = programDir
	cmd.Env = env
	// Wrapped so exec copies through a pipe: node may switch a shared fd to non-blocking
	// mode, which would break our own writes to stdout/stderr.
	cmd.Stdout = struct{ io.Writer }{os.Stdout}
	cmd.Stderr = struct{ io.Writer }{os.Stderr}

	runErr := cmd.Run()
	if runErr == nil {
		return &pulumirpc.RunResponse{}, nil
	}
	var exitErr *exec.ExitError
	if errors.As(runErr, &exitErr) {
		if exitErr.ExitCode() == exitCodeAlreadyReported {
			return &pulumirpc.RunResponse{Bail: true}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf(
			"Program exited with non-zero exit code: %d", exitErr.ExitCode())}, nil
	}
	return &pulumirpc.RunResponse{Error: fmt.Sprintf(
		"could not run the program with %s %s: %v", nodeBin, strings.Join(args, " "), runErr)}, nil
}

// RunPlugin starts a source-based plugin: `node [nodeargs] <run-plugin> <pluginDir> <args>` in
// the request's working directory and environment, its output streamed to the engine (the
// plugin prints its gRPC port there). The SDK's run-plugin script is resolved from the plugin's
// directory, as upstream does, so the plugin runs with its own @pulumi/pulumi.
func (h *languageHost) RunPlugin(
	req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer,
) error {
	info := req.GetInfo()
	pluginDir := programDirectory(info, req.GetPwd())
	if req.GetKind() == "analyzer" {
		return status.Errorf(codes.Unimplemented,
			"the plugin in %s is a policy pack (kind analyzer); this language host does not run policy packs", pluginDir)
	}
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		return fmt.Errorf("could not find `node` on PATH to run the plugin in %s; install Node.js >= 20: %w",
			pluginDir, err)
	}
	runPath := os.Getenv("PULUMI_LANGUAGE_NODEJS_RUN_PATH")
	if runPath == "" {
		found, ok := findUp(pluginDir, filepath.Join("node_modules", runPluginScript))
		if !ok {
			return fmt.Errorf("the Pulumi Node.js SDK is not installed for the plugin in %s: no node_modules/%s "+
				"there or in a parent directory; run `npm install` in %s (it needs @pulumi/pulumi) and retry",
				pluginDir, runPluginScript, pluginDir)
		}
		runPath = found
	}
	opts, err := parseOptions(info)
	if err != nil {
		return fmt.Errorf("%s (PulumiPlugin.yaml in %s)", err, pluginDir)
	}

	closer, stdout, stderr, err := rpcutil.MakeRunPluginStreams(server, false)
	if err != nil {
		return err
	}
	defer closer.Close()

	// The engine sends the whole environment the plugin should see; an empty one means ours.
	env := req.GetEnv()
	if len(env) == 0 {
		env = os.Environ()
	}
	if opts.typescript {
		env = append(env, "PULUMI_NODEJS_TYPESCRIPT=true")
	}
	if opts.tsconfigPath != "" {
		env = append(env, "PULUMI_NODEJS_TSCONFIG_PATH="+opts.tsconfigPath)
	}
	args := append([]string{}, opts.nodeArgs...)
	args = append(args, runPath, pluginDir)
	args = append(args, req.GetArgs()...)

	// As in Run: the engine ending the RPC stops the plugin, politely first.
	cmd := exec.CommandContext(server.Context(), nodeBin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = cancelGraceDelay
	cmd.Dir = req.GetPwd()
	cmd.Env = env
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	if runErr := cmd.Run(); runErr != nil {
		var exitErr *exec.ExitError
		if errors.As(runErr, &exitErr) {
			return fmt.Errorf("the plugin in %s exited with code %d", pluginDir, exitErr.ExitCode())
		}
		return fmt.Errorf("could not run the plugin in %s with %s %s: %w",
			pluginDir, nodeBin, strings.Join(args, " "), runErr)
	}
	return closer.Close()
}

// packageJSON holds the package.json fields this host reads.
type packageJSON struct {
	Name            string            `json:"name"`
	Version         string            `json:"version"`
	Dependencies    map[string]string `json:"dependencies"`
	DevDependencies map[string]string `json:"devDependencies"`
	Pulumi          struct {
		Resource bool   `json:"resource"`
		Name     string `json:"name"`
		Version  string `json:"version"`
		Server   string `json:"server"`
	} `json:"pulumi"`
}

func readPackageJSON(path string) (*packageJSON, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pkg packageJSON
	if err := json.Unmarshal(b, &pkg); err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %w", path, err)
	}
	return &pkg, nil
}

// installedPackages lists the package.json files of the packages directly inside the
// node_modules that serves dir (including @scope/name packages), sorted.
func installedPackages(dir string) ([]string, error) {
	nodeModules, ok := findUp(dir, "node_modules")
	if !ok {
		return nil, nil
	}
	entries, err := os.ReadDir(nodeModules)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		if strings.HasPrefix(name, "@") {
			scoped, err := os.ReadDir(filepath.Join(nodeModules, name))
			if err != nil {
				continue
			}
			for _, s := range scoped {
				files = append(files, filepath.Join(nodeModules, name, s.Name(), "package.json"))
			}
			continue
		}
		files = append(files, filepath.Join(nodeModules, name, "package.json"))
	}
	sort.Strings(files)
	return files, nil
}

// requiredPackages finds resource plugins declared by installed npm packages. Only the
// top level of node_modules is scanned (npm hoists provider SDKs there); upstream walks
// the whole tree, which costs seconds on large trees and finds nothing more in practice.
func requiredPackages(dir string) ([]*pulumirpc.PackageDependency, error) {
	files, err := installedPackages(dir)
	if err != nil {
		return nil, err
	}
	var deps []*pulumirpc.PackageDependency
	for _, f := range files {
		pkg, err := readPackageJSON(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
		if !pkg.Pulumi.Resource {
			continue
		}
		name := pkg.Pulumi.Name
		if name == "" {
			name = strings.TrimPrefix(pkg.Name, "@pulumi/")
			name = strings.TrimPrefix(name, "@")
		}
		v := pkg.Pulumi.Version
		if v == "" {
			v = pkg.Version
		}
		if v != "" && !strings.HasPrefix(v, "v") {
			v = "v" + v
		}
		deps = append(deps, &pulumirpc.PackageDependency{
			Name: name, Kind: "resource", Version: v, Server: pkg.Pulumi.Server,
		})
	}
	return deps, nil
}

func (h *languageHost) GetRequiredPackages(
	_ context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	deps, err := requiredPackages(programDirectory(req.GetInfo(), ""))
	if err != nil {
		return nil, err
	}
	return &pulumirpc.GetRequiredPackagesResponse{Packages: deps}, nil
}

func (h *languageHost) GetRequiredPlugins(
	_ context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	deps, err := requiredPackages(programDirectory(req.GetInfo(), req.GetProgram())) //nolint:staticcheck
	if err != nil {
		return nil, err
	}
	plugins := make([]*pulumirpc.PluginDependency, 0, len(deps))
	for _, d := range deps {
		plugins = append(plugins, &pulumirpc.PluginDependency{
			Name: d.Name, Kind: d.Kind, Version: d.Version, Server: d.Server,
		})
	}
	return &pulumirpc.GetRequiredPluginsResponse{Plugins: plugins}, nil
}

// InstallDependencies runs `npm install` unless the program already resolves node_modules
// (our tests link the repository's node_modules, and must never reach the network).
func (h *languageHost) InstallDependencies(
	req *pulumirpc.InstallDependenciesRequest, server pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	closer, stdout, stderr, err := rpcutil.MakeInstallDependenciesStreams(server, req.GetIsTerminal())
	if err != nil {
		return err
	}
	defer closer.Close()

	dir := programDirectory(req.GetInfo(), req.GetDirectory()) //nolint:staticcheck
	if found, ok := findUp(dir, filepath.Join("node_modules", runScript)); ok {
		fmt.Fprintf(stdout, "Dependencies already installed (%s); not running npm install.\n", found)
		return closer.Close()
	}
	// A linked node_modules (our test projects link the repository's) belongs to another
	// package: npm would prune it down to THIS package.json and wreck it for its owner.
	if link := filepath.Join(dir, "node_modules"); isSymlink(link) {
		target, _ := filepath.EvalSymlinks(link)
		return fmt.Errorf("not running npm install in %s: its node_modules is a link to %s, which npm would "+
			"rewrite for this package.json; run npm ci in the package that owns %s instead", dir, target, target)
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("could not find `npm` on PATH to install the dependencies of %s: %w", dir, err)
	}
	fmt.Fprintf(stdout, "Installing dependencies in %s with npm install...\n", dir)
	cmd := exec.CommandContext(server.Context(), npm, "install")
	cmd.Dir = dir
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("npm install in %s failed: %w", dir, err)
	}
	return closer.Close()
}

func (h *languageHost) About(ctx context.Context, _ *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("could not find `node` on PATH: %w", err)
	}
	out, err := exec.CommandContext(ctx, nodeBin, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --version failed: %w", nodeBin, err)
	}
	return &pulumirpc.AboutResponse{
		Executable: nodeBin,
		Version:    strings.TrimPrefix(strings.TrimSpace(string(out)), "v"),
	}, nil
}

// GetProgramDependencies reports the program's declared npm dependencies with the version
// actually installed (used by `pulumi about`).
func (h *languageHost) GetProgramDependencies(
	_ context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	dir := programDirectory(req.GetInfo(), req.GetPwd()) //nolint:staticcheck
	manifest, ok := findUp(dir, "package.json")
	if !ok {
		return &pulumirpc.GetProgramDependenciesResponse{}, nil
	}
	pkg, err := readPackageJSON(manifest)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(pkg.Dependencies)+len(pkg.DevDependencies))
	for n := range pkg.Dependencies {
		names = append(names, n)
	}
	if req.GetTransitiveDependencies() {
		for n := range pkg.DevDependencies {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var deps []*pulumirpc.DependencyInfo
	for _, n := range names {
		installed, ok := findUp(filepath.Dir(manifest), filepath.Join("node_modules", n, "package.json"))
		if !ok {
			continue
		}
		p, err := readPackageJSON(installed)
		if err != nil {
			continue
		}
		deps = append(deps, &pulumirpc.DependencyInfo{Name: n, Version: p.Version})
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: deps}, nil
}

// RuntimeOptionsPrompts: `pulumi new` asks which options to prompt for; we have none.
func (h *languageHost) RuntimeOptionsPrompts(
	context.Context, *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

func isSymlink(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode()&os.ModeSymlink != 0
}
