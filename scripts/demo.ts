/**
 * The main job in one command (`bash scripts/demo.sh`, which installs what is missing and then runs
 * this file): a lab of real Docker hosts, the root program driven by stack config, the real Pulumi
 * CLI, and real traffic deciding whether it worked.
 *
 *   1. lab: 3 Docker hosts (each a network namespace with dockerd, sshd and published ports
 *      8080/tcp and 5353/udp) and 3 client namespaces (lab/index.ts);
 *   2. traffic before: every client reaches every published port (the problem this project solves);
 *      a foreign rule is put in one host's DOCKER-USER, to show it is never touched;
 *   3. a stack of the root program (Pulumi.yaml, program/) with the embedded policy below, its
 *      private key set with `pulumi config set --secret`;
 *   4. `pulumi preview --diff` and `pulumi up` (canary first, then batches);
 *   5. the matrix: which client reached which host and port (real traffic) next to what the policy
 *      says, the program's `unpolicedPorts` output (published ports no allowlist polices), plus the
 *      containers' own outbound traffic; any mismatch makes the demo fail;
 *   6. `pulumi up` again must change nothing; the foreign rule is still there;
 *   7. clean up: `pulumi destroy`, `pulumi stack rm`, lab down (skipped with --keep, which prints how
 *      to explore and tear down instead).
 *
 * Exported pieces (`runDemo`, `demoStackConfig`, `expectedReach`) are what test/engine/demo.test.ts
 * and test/scripts/demo.test.ts check.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { BlockList, isIP } from "node:net";
import * as os from "node:os";
import * as path from "node:path";

import { startLab, type Lab } from "../lab";

const REPO = path.resolve(__dirname, "..");
const NS = "docker-port-allowlist";
/** A foreign rule the demo adds to one host: it must survive `up` and `destroy` byte for byte. */
const FOREIGN_RULE = '-A DOCKER-USER -s 198.19.255.0/24 -m comment --comment "ops: hand-written" -j DROP';

export interface DemoOptions {
  /** Keep the lab and the stack up at the end and print how to explore them. @default false */
  readonly keep?: boolean;
  /** Where progress goes. @default - console.log */
  readonly log?: (line: string) => void;
}

/** One cell of the matrix: what the policy says and what real traffic showed. */
export interface ReachCell {
  readonly client: string;
  readonly host: string;
  readonly policy: string;
  readonly port: number;
  readonly proto: "tcp" | "udp";
  readonly expected: boolean;
  readonly measured: boolean;
}

export interface DemoResult {
  readonly labId: string;
  readonly stack: string;
  /** Client -> host traffic before any allowlist (all should be open). */
  readonly before: readonly ReachCell[];
  /** Client -> host traffic after `pulumi up`. */
  readonly after: readonly ReachCell[];
  /**
   * The root program's `unpolicedPorts` output after `pulumi up`: per host, the published ports
   * no allowlist polices (docker-3 applies no dns policy, so 5353/udp).
   */
  readonly unpoliced: Readonly<Record<string, readonly string[]>>;
  /** Container -> outside traffic per host after `pulumi up` (must stay open). */
  readonly outbound: readonly { readonly host: string; readonly port: number; readonly open: boolean }[];
  /** Output of `pulumi preview --diff`. */
  readonly preview: string;
  /** Whether the second `pulumi up` reported no changes. */
  readonly secondUpNoChanges: boolean;
  /** Whether the foreign DOCKER-USER rule was intact after `up` (and, without --keep, after `destroy`). */
  readonly foreignRuleIntact: boolean;
  /** Whether no `dpa:` rule was left on any host after `destroy` (true with --keep: not checked). */
  readonly cleanAfterDestroy: boolean;
  /** Human-readable problems; empty means the demo passed. */
  readonly problems: readonly string[];
}

/** Short names the demo gives the lab's hosts and clients (the fleet's host names). */
const hostName = (i: number) => `docker-${i + 1}`;
const clientName = (i: number) => `client-${i + 1}`;

/**
 * The embedded policy, as stack config for the root program (minus the private key, which is set
 * with `--secret`). 3 hosts, 2 policies, a per-host override, a canary and batches:
 *   web  8080/tcp: client-1 only; docker-3 also lets client-3 in (override);
 *   dns  5353/udp: client-2 only; not applied on docker-3 (it runs only the web policy).
 */
export function demoStackConfig(lab: Pick<Lab, "hosts" | "clients">): Record<string, unknown> {
  const c = lab.clients;
  if (lab.hosts.length < 3 || c.length < 3) throw new Error("the demo policy needs 3 hosts and 3 clients");
  const host = (i: number) => ({
    name: hostName(i),
    connection: { host: lab.hosts[i]!.ipv4, hostKey: lab.hosts[i]!.hostKeyFingerprint },
  });
  return {
    connection: { user: "root", dialErrorLimit: 3 },
    hosts: [host(0), host(1), { ...host(2), policies: ["web"], extraSources: { web: [`${c[2]!.ipv4}/32`] } }],
    policies: [
      { name: "web", port: 8080, protocols: ["tcp"], sources: [`${c[0]!.ipv4}/32`] },
      { name: "dns", port: 5353, protocols: ["udp"], sources: [c[1]!.ipv4], action: "REJECT" },
    ],
    rollout: { canaries: [hostName(0)], batchSize: 1 },
  };
}

interface PolicyLike {
  readonly name: string;
  readonly port: number | string;
  readonly protocols?: readonly string[];
  readonly sources: readonly string[];
}
interface HostLike {
  readonly name: string;
  readonly policies?: readonly string[];
  readonly extraSources?: Readonly<Record<string, readonly string[]>>;
}

/**
 * What the stack config says about one client address reaching `port/proto` on a host: open when no
 * applied policy polices that port, else open only from the policy's sources plus the host's extra
 * sources. Written independently of provider/core (node's BlockList does the CIDR matching), so the
 * demo checks the provider instead of agreeing with it by construction.
 */
export function expectedReach(
  config: { readonly hosts: readonly HostLike[]; readonly policies: readonly PolicyLike[] },
  host: string,
  clientAddress: string,
  port: number,
  proto: "tcp" | "udp",
): { policy: string | undefined; allowed: boolean } {
  const h = config.hosts.find((x) => x.name === host);
  if (!h) throw new Error(`no host ${host} in the config`);
  for (const p of config.policies) {
    if (h.policies && !h.policies.includes(p.name)) continue;
    const [from, to] = String(p.port).split("-").map(Number) as [number, number?];
    if (port < from || port > (to ?? from)) continue;
    if (!(p.protocols ?? ["tcp"]).includes(proto)) continue;
    const list = new BlockList();
    for (const s of [...p.sources, ...(h.extraSources?.[p.name] ?? [])]) {
      const [addr, prefix] = s.split("/");
      const family = isIP(addr!) === 6 ? "ipv6" : "ipv4";
      list.addSubnet(addr!, prefix === undefined ? (family === "ipv4" ? 32 : 128) : Number(prefix), family);
    }
    return {
      policy: p.name,
      allowed: list.check(clientAddress, isIP(clientAddress) === 6 ? "ipv6" : "ipv4"),
    };
  }
  return { policy: undefined, allowed: true };
}

/** Runs a command, streaming its output to `log` (indented) and returning it. */
function runStreamed(
  cmd: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  log: (line: string) => void,
  input?: string,
): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: REPO, env, stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    let partial = "";
    const onData = (chunk: Buffer) => {
      const text = chunk.toString("utf8");
      output += text;
      const lines = (partial + text).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) log(`    ${line}`);
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", reject);
    child.on("close", (code) => {
      if (partial) log(`    ${partial}`);
      resolve({ code: code ?? 1, output });
    });
    child.stdin.end(input ?? "");
  });
}

/** The environment the engine needs (PATH, PULUMI_HOME, ...), from scripts/engine.sh --env. */
function engineEnv(): NodeJS.ProcessEnv {
  const res = spawnSync("bash", ["-c", 'eval "$(bash scripts/engine.sh --env --quiet)" && env -0'], {
    cwd: REPO,
    encoding: "utf8",
    maxBuffer: 16 * 1024 * 1024,
  });
  if (res.status !== 0) {
    throw new Error(`scripts/engine.sh --env failed (exit ${res.status}): ${res.stderr.trim()}`);
  }
  const env: NodeJS.ProcessEnv = {};
  for (const entry of res.stdout.split("\0")) {
    const eq = entry.indexOf("=");
    if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return env;
}

/**
 * The root program imports the compiled package (bin/provider): the dynamic provider's methods run
 * in a plain-node process that cannot load .ts. Build it when any provider source is newer. flock
 * serialises this with the engine tests' own build of the same directory.
 */
function ensureBuilt(log: (line: string) => void): void {
  const newest = (dir: string, ext: string): number => {
    if (!fs.existsSync(dir)) return 0;
    let t = 0;
    for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
      if (e.isFile() && e.name.endsWith(ext))
        t = Math.max(t, fs.statSync(path.join(e.parentPath, e.name)).mtimeMs);
    }
    return t;
  };
  const out = path.join(REPO, "bin", "provider");
  if (
    fs.existsSync(path.join(out, "index.js")) &&
    newest(path.join(REPO, "provider"), ".ts") <= newest(out, ".js")
  ) {
    return;
  }
  log("  building the package (tsc -p tsconfig.json -> bin/)");
  const tsc = path.join(REPO, "node_modules", ".bin", "tsc");
  const lock = path.join(os.tmpdir(), "dpa-package-build.lock");
  const r = spawnSync("flock", ["-w", "300", lock, tsc, "-p", "tsconfig.json"], {
    cwd: REPO,
    encoding: "utf8",
  });
  if (r.status !== 0) {
    throw new Error(
      `Command failed with exit code ${r.status}: tsc -p tsconfig.json\n${r.stdout}${r.stderr}`,
    );
  }
}

/** Runs probes with a little parallelism: a closed port costs a 2 s timeout. */
async function pool<T, R>(items: readonly T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  return out;
}

/**
 * Probes every client -> host port. `withPolicy` false: the expectation is "open" (no allowlist yet).
 * A probe that disagrees with the expectation is repeated once after a second, so a server that is
 * still starting (UDP right after the lab came up) is not reported as a mismatch; a real block or
 * leak shows the same result twice.
 */
async function measure(
  lab: Lab,
  config: ReturnType<typeof demoStackConfig>,
  withPolicy: boolean,
): Promise<ReachCell[]> {
  const cfg = config as unknown as { hosts: HostLike[]; policies: PolicyLike[] };
  const ports = [
    { port: 8080, proto: "tcp" as const },
    { port: 5353, proto: "udp" as const },
  ];
  const jobs = lab.clients.flatMap((client, ci) =>
    lab.hosts.flatMap((host, hi) => ports.map((p) => ({ client, ci, host, hi, ...p }))),
  );
  return pool(jobs, 6, async (j) => {
    const exp = withPolicy
      ? expectedReach(cfg, hostName(j.hi), j.client.ipv4, j.port, j.proto)
      : { policy: undefined, allowed: true };
    let measured = await lab.probe(j.client, j.host, j.port, j.proto);
    if (measured !== exp.allowed) {
      await new Promise((r) => setTimeout(r, 1000));
      measured = await lab.probe(j.client, j.host, j.port, j.proto);
    }
    return {
      client: clientName(j.ci),
      host: hostName(j.hi),
      policy: exp.policy ?? "-",
      port: j.port,
      proto: j.proto,
      expected: exp.allowed,
      measured,
    };
  });
}

/** True when an `unpolicedPorts` line names `port/proto` in IPv4 (the clients' family here). */
function listsPort(lines: readonly string[] | undefined, port: number, proto: string): boolean {
  return (lines ?? []).some((l) => l.startsWith(`${port}/${proto} ipv4 `));
}

/**
 * Where the `unpolicedPorts` output and the policy disagree, as problems: a (host, port) that no
 * policy covers must be listed in IPv4, and one a policy covers must not be.
 */
export function unpolicedMismatches(
  cells: readonly ReachCell[],
  unpoliced: Readonly<Record<string, readonly string[]>>,
): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const c of cells) {
    const key = `${c.host} ${c.port}/${c.proto}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const policed = c.policy !== "-";
    if (listsPort(unpoliced[c.host], c.port, c.proto) === policed) {
      problems.push(
        `unpolicedPorts of ${c.host} ${policed ? "lists" : "does not list"} ${c.port}/${c.proto} ipv4, which ${policed ? `policy ${c.policy} polices` : "no policy polices"}`,
      );
    }
  }
  return problems;
}

/**
 * The matrix as text: one row per client, one column per (port, host); `policy/measured`. With
 * `unpoliced` (the program's `unpolicedPorts` output), a last row says per cell whether the
 * output lists the port in IPv4 (`UNPOLICED`: open to everyone) or not (`policed`).
 */
export function renderMatrix(
  cells: readonly ReachCell[],
  clientAddresses: Record<string, string>,
  unpoliced?: Readonly<Record<string, readonly string[]>>,
): string[] {
  const hosts = [...new Set(cells.map((c) => c.host))];
  const clients = [...new Set(cells.map((c) => c.client))];
  // Label each port with its policy (some hosts may not apply it: their cells say "-").
  const ports = [
    ...new Map(
      [...cells]
        .sort((a, b) => (a.policy === "-" ? 1 : 0) - (b.policy === "-" ? 1 : 0))
        .reverse()
        .map((c) => [`${c.port}/${c.proto}`, c]),
    ).values(),
  ].sort((a, b) => a.port - b.port);
  const cellText = (c: ReachCell | undefined) => {
    if (!c) return "?";
    const text = `${c.expected ? "allow" : "deny"}/${c.measured ? "open" : "shut"}`;
    return c.expected === c.measured ? text : `${text}!!`;
  };
  const w = 13;
  const lines: string[] = [];
  const first = 30;
  lines.push(
    "".padEnd(first) +
      ports
        .map((p) =>
          `${p.port}/${p.proto}${p.policy === "-" ? "" : ` (policy ${p.policy})`}`.padEnd(w * hosts.length),
        )
        .join(" "),
  );
  lines.push("client".padEnd(first) + ports.map(() => hosts.map((h) => h.padEnd(w)).join("")).join(" "));
  for (const cl of clients) {
    lines.push(
      `${cl} ${clientAddresses[cl] ?? ""}`.padEnd(first) +
        ports
          .map((p) =>
            hosts
              .map((h) =>
                cellText(cells.find((c) => c.client === cl && c.host === h && c.port === p.port)).padEnd(w),
              )
              .join(""),
          )
          .join(" "),
    );
  }
  if (unpoliced !== undefined) {
    lines.push(
      "unpolicedPorts (output)".padEnd(first) +
        ports
          .map((p) =>
            hosts
              .map((h) => (listsPort(unpoliced[h], p.port, p.proto) ? "UNPOLICED" : "policed").padEnd(w))
              .join(""),
          )
          .join(" "),
    );
  }
  return lines;
}

/** Lines of DOCKER-USER and DPA-* chains on a host, via its own iptables-save. */
async function dockerUserLines(lab: Lab, host: Lab["hosts"][number]): Promise<string[]> {
  const res = await lab.hostExec(host, "iptables-save -t filter");
  if (res.code !== 0) throw new Error(`iptables-save on ${host.name} failed: ${res.stderr}`);
  return res.stdout.split("\n").filter((l) => /^-A (DOCKER-USER|DPA-)/.test(l));
}

/** Runs the whole demo. Throws only when something could not run at all; see `problems`. */
export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  const step = (n: number, text: string) => log(`\n[demo ${n}/7] ${text}`);
  const problems: string[] = [];
  const t0 = Date.now();
  const secs = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;

  ensureBuilt(log);
  step(
    1,
    "starting a lab: 3 Docker hosts, 3 clients (network namespaces, dockerd, sshd, busybox containers)",
  );
  const lab = await startLab({ docker: 3, light: 0, clients: 3 });
  const stack = `demo-${lab.id}`;
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), `dpa-demo-${lab.id}-`));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...engineEnv(),
    PULUMI_BACKEND_URL: `file://${stateDir}`,
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
  };
  const pulumi = (args: string[], input?: string) =>
    runStreamed(
      "pulumi",
      [...args, "--non-interactive", ...(args[1] === "init" ? [] : ["--stack", stack])],
      env,
      log,
      input,
    );
  let destroyed = false;
  try {
    lab.hosts.forEach((h, i) =>
      log(`  ${hostName(i).padEnd(9)} ${h.ipv4.padEnd(15)} ssh ${h.hostKeyFingerprint}`),
    );
    lab.clients.forEach((c, i) => log(`  ${clientName(i).padEnd(9)} ${c.ipv4}`));
    log(`  lab ${lab.id} up after ${secs()}`);

    const config = demoStackConfig(lab);
    const addresses = Object.fromEntries(lab.clients.map((c, i) => [clientName(i), c.ipv4]));

    step(2, "traffic before any allowlist (Docker publishes to everyone; INPUT rules would not help)");
    const foreignHost = lab.hosts[1]!;
    const add = await lab.hostExec(foreignHost, `iptables ${FOREIGN_RULE.replace(/^-A/, "-I")}`);
    if (add.code !== 0)
      throw new Error(`could not add the foreign rule on ${foreignHost.name}: ${add.stderr}`);
    log(`  added a foreign rule on ${hostName(1)}: ${FOREIGN_RULE}`);
    const before = await measure(lab, config, false);
    for (const line of renderMatrix(before, addresses)) log(`  ${line}`);
    const closedBefore = before.filter((c) => !c.measured);
    if (closedBefore.length > 0) {
      problems.push(
        `before any allowlist, ${closedBefore.length} probes were already closed (lab not healthy)`,
      );
    }

    step(3, `stack ${stack} of the root program; config from the embedded policy`);
    const init = await pulumi(["stack", "init", stack]);
    if (init.code !== 0) throw new Error(`pulumi stack init failed:\n${init.output}`);
    const stackFile = path.join(REPO, `Pulumi.${stack}.yaml`);
    const salt = fs.readFileSync(stackFile, "utf8");
    const yaml =
      salt.trimEnd() +
      "\nconfig:\n" +
      Object.entries(config)
        .map(([k, v]) => `  ${NS}:${k}: ${JSON.stringify(v)}\n`)
        .join("");
    fs.writeFileSync(stackFile, yaml);
    const secret = await pulumi(
      ["config", "set", "--secret", "--path", `${NS}:connection.privateKey`],
      lab.clientKey.privateKey,
    );
    if (secret.code !== 0) throw new Error(`pulumi config set --secret failed:\n${secret.output}`);
    log(
      `  wrote ${path.relative(REPO, stackFile)}; the SSH key went in with: pulumi config set --secret --path ${NS}:connection.privateKey`,
    );
    for (const line of fs.readFileSync(stackFile, "utf8").split("\n")) log(`    ${line}`);

    step(4, "pulumi preview --diff, then pulumi up (canary docker-1 first, then one host per batch)");
    const preview = await pulumi(["preview", "--diff"]);
    if (preview.code !== 0) throw new Error(`pulumi preview failed (exit ${preview.code})`);
    const up = await pulumi(["up", "--yes", "--skip-preview"]);
    if (up.code !== 0) throw new Error(`pulumi up failed (exit ${up.code})`);

    step(5, "traffic after: policy (allow/deny) next to what real packets did (open/shut); !! = mismatch");
    const after = await measure(lab, config, true);
    // stdout alone (the JSON), not streamed into the log: the lines below say the same.
    const shown = spawnSync(
      "pulumi",
      ["stack", "output", "unpolicedPorts", "--json", "--non-interactive", "--stack", stack],
      { cwd: REPO, env, encoding: "utf8" },
    );
    if (shown.status !== 0)
      throw new Error(`pulumi stack output failed (exit ${shown.status}): ${shown.stderr}`);
    const unpoliced = JSON.parse(shown.stdout) as Record<string, string[]>;
    for (const line of renderMatrix(after, addresses, unpoliced)) log(`  ${line}`);
    for (const [h, ports] of Object.entries(unpoliced)) {
      log(`  ${h} published ports no allowlist polices: ${ports.length === 0 ? "none" : ports.join(", ")}`);
    }
    problems.push(...unpolicedMismatches(after, unpoliced));
    for (const c of after.filter((x) => x.expected !== x.measured)) {
      problems.push(
        `${c.client} -> ${c.host}:${c.port}/${c.proto}: policy ${c.policy} says ${c.expected ? "allow" : "deny"} ` +
          `but traffic was ${c.measured ? "let through" : "blocked"}`,
      );
    }
    const outbound = await pool(lab.hosts, 3, async (h) => ({
      host: hostName(lab.hosts.indexOf(h)),
      port: 8080,
      open: await lab.containerProbe(h, 8080, "tcp"),
    }));
    log(
      `  containers' own outbound 8080/tcp (exemptDockerBridges): ` +
        outbound.map((o) => `${o.host} ${o.open ? "open" : "SHUT!!"}`).join(", "),
    );
    for (const o of outbound.filter((x) => !x.open)) {
      problems.push(`a container on ${o.host} lost its own outbound 8080/tcp`);
    }

    step(6, "pulumi up again: must change nothing; the foreign rule must be untouched");
    const again = await pulumi(["up", "--yes", "--skip-preview", "--expect-no-changes"]);
    const secondUpNoChanges = again.code === 0;
    if (!secondUpNoChanges) problems.push("the second pulumi up wanted to change something");
    let foreignRuleIntact = (await dockerUserLines(lab, foreignHost)).includes(FOREIGN_RULE);
    log(`  foreign rule on ${hostName(1)}: ${foreignRuleIntact ? "intact" : "CHANGED!!"}`);

    let cleanAfterDestroy = true;
    if (!options.keep) {
      step(7, "clean up: pulumi destroy, then check no dpa: rule is left and the foreign rule still is");
      const destroy = await pulumi(["destroy", "--yes", "--skip-preview"]);
      destroyed = destroy.code === 0;
      if (!destroyed) problems.push("pulumi destroy failed");
      for (const h of lab.hosts) {
        const left = (await dockerUserLines(lab, h)).filter(
          (l) => l.includes('"dpa:') || l.startsWith("-A DPA-"),
        );
        if (left.length > 0) {
          cleanAfterDestroy = false;
          problems.push(`${h.name} still has ${left.length} dpa rules after destroy`);
        }
      }
      foreignRuleIntact =
        foreignRuleIntact && (await dockerUserLines(lab, foreignHost)).includes(FOREIGN_RULE);
      log(
        `  hosts clean: ${cleanAfterDestroy ? "yes" : "NO!!"}; foreign rule: ${foreignRuleIntact ? "intact" : "CHANGED!!"}`,
      );
    }
    if (!foreignRuleIntact) problems.push(`the foreign rule on ${hostName(1)} was changed`);

    return {
      labId: lab.id,
      stack,
      before,
      after,
      unpoliced,
      outbound,
      preview: preview.output,
      secondUpNoChanges,
      foreignRuleIntact,
      cleanAfterDestroy,
      problems,
    };
  } finally {
    if (options.keep) {
      printKeep(lab, stack, stateDir, env, log);
    } else {
      if (destroyed) await pulumi(["stack", "rm", "--yes"]);
      else if (fs.existsSync(path.join(REPO, `Pulumi.${stack}.yaml`))) {
        // The lab goes away below; a stack that could not be destroyed cannot be either: drop it.
        await pulumi(["stack", "rm", "--yes", "--force"]);
      }
      await lab.down();
      fs.rmSync(stateDir, { recursive: true, force: true });
      log(`  lab ${lab.id} down, stack removed (${secs()} in all)`);
    }
  }
}

function printKeep(
  lab: Lab,
  stack: string,
  stateDir: string,
  env: NodeJS.ProcessEnv,
  log: (line: string) => void,
): void {
  // Owner "manual" (what `lab.sh up` writes for a lab a person started): no later startLab or
  // `down-all --stale` reaps it once this process is gone. main() then exits without the lab's
  // exit hook, which would tear it down.
  fs.writeFileSync(path.join(lab.dir, "owner"), "manual\n");
  const c1 = lab.clients[0]!;
  const h1 = lab.hosts[0]!;
  for (const line of [
    "",
    `--keep: lab ${lab.id} and stack ${stack} stay up. Explore:`,
    `  cd ${REPO} && eval "$(bash scripts/engine.sh --env)"`,
    `  export PULUMI_BACKEND_URL=file://${stateDir} PULUMI_CONFIG_PASSPHRASE=${env.PULUMI_CONFIG_PASSPHRASE}`,
    `  pulumi stack select ${stack} && pulumi preview --diff && pulumi refresh`,
    `  ip netns exec ${h1.netns} iptables-save -t filter        # the rules on ${hostName(0)}`,
    `  ip netns exec ${c1.netns} curl -m 2 http://${h1.ipv4}:8080/  # traffic from ${clientName(0)}`,
    `  bash lab/lab.sh probe ${lab.id} ${c1.name} ${h1.name} 8080 tcp`,
    "Tear down (same shell):",
    `  pulumi destroy --yes && pulumi stack rm --yes; bash lab/lab.sh down ${lab.id}; rm -rf ${stateDir}`,
  ]) {
    log(line);
  }
}

/** CLI: `node ... scripts/demo.ts [--keep]`; exit 1 on any mismatch or failure. */
export async function main(argv: readonly string[]): Promise<number> {
  const unknown = argv.filter((a) => a !== "--keep");
  if (unknown.length > 0) {
    console.error(`demo: unknown argument ${unknown.join(" ")}; usage: bash scripts/demo.sh [--keep]`);
    return 2;
  }
  try {
    const keep = argv.includes("--keep");
    const result = await runDemo({ keep });
    let code = 0;
    if (result.problems.length > 0) {
      console.log(`\nDEMO FAILED: ${result.problems.length} problem(s):`);
      for (const p of result.problems) console.log(`  - ${p}`);
      code = 1;
    } else {
      console.log(
        "\nDEMO PASSED: every client reached exactly what the policy allows; nothing foreign was touched.",
      );
    }
    if (keep) {
      // Skip the 'exit' listeners: lab/index.ts tears down every lab of this process there.
      // (stdout/stderr are synchronous on Linux, so nothing printed above is lost.)
      (process as unknown as { reallyExit(code: number): never }).reallyExit(code);
    }
    return code;
  } catch (e) {
    console.error(`\nDEMO FAILED: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}
