/**
 * A fleet through the real engine: 50 light lab hosts (sshd + Docker 29's chain layout in a network
 * namespace each), 1 and 3 allowlists of 10 sources per host, one `DockerPortAllowlist` each in
 * one stack, against the floor: the same program with a dynamic resource that does nothing
 * (same inputs, same count, same program shape: neither exports stack outputs). Per command (`up`
 * create, no-change `up`, `preview`, `destroy`): wall time; client CPU (the Pulumi CLI, language
 * host, program and dynamic-provider processes, counted by a cgroup the CLI starts in) and, of it,
 * the dynamic-provider process's (a wrapper on PATH moves it into a cgroup of its own); host CPU
 * (everything the 50 hosts' sshds forked); SSH
 * logins per host (from each host's sshd log), and after each create `up` the connections the
 * operations report in `lastOperation` summed per host.
 *
 * Every run is checked: after `up` every host holds its allowlists' chains, after `destroy` every
 * host's filter table is as the lab laid it.
 *
 * In the lab the 50 hosts share the machine's cores with the client, so wall time counts the
 * hosts' work too; client CPU is what the machine running `pulumi` pays.
 *
 * Run as root, under the lab lock, with the engine built (`bash scripts/engine.sh`):
 *   flock /work/lab.lock node -e 'const ts=require("typescript"),fs=require("fs");require.extensions[".ts"]=(m,f)=>m._compile(
 *     ts.transpileModule(fs.readFileSync(f,"utf8"),{compilerOptions:{module:1,target:9}}).outputText,f);
 *     require("./bench/fleet.ts")' [runs] [hosts] [--per-host=N] [--no-floor]
 * (`--per-host`, `--no-floor`: one program alone, to look into one figure without the whole run;
 * `--cpu-prof=DIR`: every node process of the CLI's tree, the program and the dynamic-provider
 * process, writes a V8 CPU profile into DIR, for finding where client CPU goes;
 * `--cli-profile=DIR`: the Pulumi CLI's own profile of each create, `pulumi up --profiling`.)
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";
import { comparableSave, startLab, type Lab } from "../lab";
import { buildPackage, findEngine, PulumiProject } from "../test/engine/support";
import { acceptedLogins, CpuAccount, fmt, loadavg, machineLine, median } from "./support";

const SOURCES = Array.from({ length: 10 }, (_, i) => `198.19.0.${i + 1}`);

/** What both programs read from the stack config: the key, and the allowlists to declare. */
const PROGRAM_HEAD = `import * as pulumi from "@pulumi/pulumi";
const config = new pulumi.Config();
const privateKey = config.requireSecret("privateKey");
const declared = config.requireObject<{ name: string; args: { connection: Record<string, unknown> } }[]>("allowlists");
`;

/** One DockerPortAllowlist per declared allowlist (the compiled package from `packageDir`); no stack outputs. */
const REAL_PROGRAM = `${PROGRAM_HEAD}const pkg = require(config.require("packageDir"));
for (const { name, args } of declared)
  new pkg.DockerPortAllowlist(name, { ...args, connection: { ...args.connection, privateKey } });
`;

/** The floor: one dynamic resource per allowlist with the same inputs, whose provider does nothing. */
const FLOOR_PROGRAM = `${PROGRAM_HEAD}const noop: pulumi.dynamic.ResourceProvider = {
  async create(inputs) {
    return { id: "noop", outs: inputs };
  },
};
class Noop extends pulumi.dynamic.Resource {
  constructor(name: string, props: Record<string, unknown>) {
    super(noop, name, props);
  }
}
for (const { name, args } of declared) new Noop(name, { ...args, connection: { ...args.connection, privateKey } });
`;

interface Step {
  readonly wallS: number;
  readonly clientCpuS: number;
  /** Of that, the dynamic-provider process (started through a wrapper that moves it into its own cgroup). */
  readonly providerCpuS: number;
  readonly hostCpuS: number;
  /** SSH logins per host, in the lab's host order. */
  readonly logins: readonly number[];
  /**
   * Per host, its sshd's logins (L) and disconnects (D) in order: `LDLD` is a connection closed and
   * dialed again, `LLDD` two connections at once.
   */
  readonly order: readonly string[];
}

type Command = "up" | "up, no change" | "preview" | "destroy";
const COMMANDS: readonly Command[] = ["up", "up, no change", "preview", "destroy"];

interface Fixture {
  readonly lab: Lab;
  /** `--cli-profile=DIR`: the CLI's own profile of each create (`pulumi up --profiling`). */
  readonly cliProfile?: string;
  readonly hostCpu: CpuAccount;
  readonly clientCpu: CpuAccount;
  readonly providerCpu: CpuAccount;
  readonly start: readonly string[];
}

/** The part of a host's sshd log written since `from` bytes. */
function sshdLog(lab: Lab, name: string, from = 0): string {
  return readFileSync(join(lab.dir, name, "sshd.log"))
    .subarray(from)
    .toString("utf8");
}

async function measure(f: Fixture, fn: () => Promise<void>): Promise<Step> {
  const logins0 = f.lab.hosts.map((h) => acceptedLogins(f.lab, h));
  const bytes0 = f.lab.hosts.map((h) => statSync(join(f.lab.dir, h.name, "sshd.log")).size);
  const host0 = f.hostCpu.seconds();
  const client0 = f.clientCpu.seconds();
  const provider0 = f.providerCpu.seconds();
  const t0 = performance.now();
  await fn();
  const wallS = (performance.now() - t0) / 1000;
  const logins = f.lab.hosts.map((h, i) => acceptedLogins(f.lab, h) - logins0[i]);
  const order = f.lab.hosts.map((h, i) =>
    sshdLog(f.lab, h.name, bytes0[i])
      .split("\n")
      .map((l) =>
        l.includes("Accepted publickey for")
          ? "L"
          : /^(Disconnected from|Connection (closed|reset) by) /.test(l)
            ? "D"
            : "",
      )
      .join(""),
  );
  return {
    wallS,
    clientCpuS: f.clientCpu.seconds() - client0 + f.providerCpu.seconds() - provider0,
    providerCpuS: f.providerCpu.seconds() - provider0,
    hostCpuS: f.hostCpu.seconds() - host0,
    logins,
    order,
  };
}

async function filterTables(lab: Lab): Promise<string[]> {
  return Promise.all(
    lab.hosts.map(async (h) => {
      const r = await lab.hostExec(h, "iptables-save -t filter && ip6tables-save -t filter");
      if (r.code !== 0) throw new Error(`${h.name}: iptables-save failed: ${r.stderr}`);
      return comparableSave(r.stdout);
    }),
  );
}

/** One run of the four commands; returns their steps and, for the real program, connections per host. */
async function oneRun(
  f: Fixture,
  proj: PulumiProject,
  real: boolean,
  perHost: number,
): Promise<{ steps: Record<Command, Step>; connections?: number[] }> {
  const prefix = f.clientCpu.prefix();
  const steps = {} as Record<Command, Step>;
  // `--cli-profile=DIR`: the CLI's own CPU profile of the create (`pulumi --profiling`, Go pprof).
  const profArgs =
    f.cliProfile === undefined
      ? []
      : ["--profiling", `${f.cliProfile}/up-${real ? "real" : "floor"}-${perHost}`];
  steps.up = await measure(f, async () => void (await proj.up(profArgs, { prefix, timeoutMs: 1_800_000 })));
  let connections: number[] | undefined;
  if (real) {
    const tables = await filterTables(f.lab);
    const missing = tables.findIndex((t) => (t.match(/^:DPA-/gm) ?? []).length < perHost);
    if (missing !== -1) throw new Error(`after up, ${f.lab.hosts[missing].name} lacks its allowlists`);
    const resources = (await proj.resources()).filter((r) => r.outputs?.lastOperation !== undefined);
    if (resources.length !== f.lab.hosts.length * perHost)
      throw new Error(`after up, the state holds ${resources.length} allowlists`);
    connections = f.lab.hosts.map((h) =>
      resources
        .filter((r) => r.urn.split("::").pop()!.startsWith(`${h.name}-p`))
        .reduce((n, r) => n + (r.outputs!.lastOperation as { connections: number }).connections, 0),
    );
  }
  steps["up, no change"] = await measure(f, async () => {
    const r = await proj.up([], { prefix });
    if (/\b(created|updated|deleted|replaced)\b/.test(r.stdout.split("Resources:")[1] ?? ""))
      throw new Error(`no-change up changed something:\n${r.stdout}`);
  });
  steps.preview = await measure(f, async () => void (await proj.preview([], { prefix })));
  steps.destroy = await measure(
    f,
    async () => void (await proj.destroy([], { prefix, timeoutMs: 1_800_000 })),
  );
  if (real) {
    const tables = await filterTables(f.lab);
    const changed = tables.findIndex((t, i) => t !== f.start[i]);
    if (changed !== -1)
      throw new Error(`after destroy, ${f.lab.hosts[changed].name} is not as the lab laid it`);
  }
  return { steps, connections };
}

function declare(lab: Lab, perHost: number): string {
  return JSON.stringify(
    lab.hosts.flatMap((h) =>
      Array.from({ length: perHost }, (_, i) => ({
        name: `${h.name}-p${8080 + i}`,
        args: {
          connection: { host: h.ipv4, hostKey: h.hostKey },
          port: 8080 + i,
          protocols: ["tcp"],
          sources: SOURCES,
        },
      })),
    ),
  );
}

async function main(args: string[]): Promise<void> {
  const [runs = 3, hosts = 50] = args.filter((a) => /^\d+$/.test(a)).map(Number);
  /** The value of `--name=value`, or undefined. */
  const option = (name: string) => args.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
  // A narrower run (diagnosis): `--per-host=3` only that count, `--no-floor` without the floor.
  const only = option("--per-host");
  const perHostCounts = only === undefined ? [1, 3] : [Number(only)];
  const programs = args.includes("--no-floor") ? [true] : [false, true];
  console.log(machineLine("bench/fleet.ts"));
  const packageDir = buildPackage();
  const lab = await startLab({ docker: 0, light: hosts, clients: 0, lightLayout: "docker29" });
  const hostCpu = CpuAccount.create("hosts");
  const clientCpu = CpuAccount.create("client");
  const providerCpu = CpuAccount.create("provider");
  // The engine finds the dynamic-provider plugin on PATH first: this wrapper counts it apart.
  const wrapperDir = mkdtempSync(join(tmpdir(), "dpa-bench-fleet-"));
  const plugin = "pulumi-resource-pulumi-nodejs";
  writeFileSync(
    join(wrapperDir, plugin),
    `#!/bin/sh\necho $$ > ${providerCpu.dir}/cgroup.procs && exec ${join(findEngine().binDir, plugin)} "$@"\n`,
    { mode: 0o755 },
  );
  const projects: PulumiProject[] = [];
  try {
    for (const h of lab.hosts) hostCpu.add(h.sshdPid);
    const f: Fixture = {
      lab,
      hostCpu,
      clientCpu,
      providerCpu,
      start: await filterTables(lab),
      cliProfile: option("--cli-profile"),
    };
    console.log(`# ${hosts} light hosts (docker29 layout), 10 IPv4 sources per allowlist, ${runs} runs`);
    const results: { name: string; steps: Record<Command, Step>[]; connections: number[][] }[] = [];
    for (const perHost of perHostCounts) {
      for (const real of programs) {
        const config = {
          packageDir,
          privateKey: { value: lab.clientKey.privateKey, secret: true as const },
          allowlists: declare(lab, perHost),
        };
        const prof = option("--cpu-prof");
        const env = {
          PATH: `${wrapperDir}:${findEngine().binDir}:${process.env.PATH ?? ""}`,
          ...(prof === undefined
            ? {}
            : { NODE_OPTIONS: `--require ${join(__dirname, "cpu-profile.js")}`, DPA_PROF_DIR: prof }),
        };
        const proj = await PulumiProject.create(
          real ? { program: REAL_PROGRAM, config, env } : { program: FLOOR_PROGRAM, config, env },
        );
        projects.push(proj);
        const name = `${perHost} allowlist${perHost > 1 ? "s" : ""} per host, ${real ? "DockerPortAllowlist" : "no-op floor"}`;
        const r = { name, steps: [] as Record<Command, Step>[], connections: [] as number[][] };
        for (let i = 0; i < runs; i++) {
          const one = await oneRun(f, proj, real, perHost);
          r.steps.push(one.steps);
          if (one.connections) r.connections.push(one.connections);
          console.error(
            `${name}, run ${i + 1}: up ${one.steps.up.wallS.toFixed(1)} s (loadavg ${loadavg()})`,
          );
        }
        results.push(r);
      }
    }
    console.log(`\n### ${hosts} light hosts through the real engine, ${runs} runs, median (min–max)`);
    console.log(
      "| program | command | wall s | client CPU s | of which provider process s | host CPU s (all hosts) | SSH logins per host | wall / floor | client CPU / floor |",
    );
    console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (const r of results) {
      const floor = results.find((x) => x.name.startsWith(r.name.split(",")[0]) && x.name.endsWith("floor"));
      for (const c of COMMANDS) {
        const s = r.steps.map((x) => x[c]);
        const fl = floor?.steps.map((x) => x[c]) ?? [];
        const ratio = (k: "wallS" | "clientCpuS") =>
          r === floor || floor === undefined
            ? ""
            : `${(median(s.map((x) => x[k])) / median(fl.map((x) => x[k]))).toFixed(2)}x`;
        const all = s.flatMap((x) => x.logins);
        const lo = Math.min(...all);
        const hi = Math.max(...all);
        const more = all.filter((n) => n > lo).length;
        console.log(
          `| ${r.name} | ${c} | ${fmt(
            s.map((x) => x.wallS),
            1,
          )} | ${fmt(
            s.map((x) => x.clientCpuS),
            1,
          )} | ${fmt(
            s.map((x) => x.providerCpuS),
            1,
          )} | ${fmt(
            s.map((x) => x.hostCpuS),
            1,
          )} | ${lo === hi ? lo : `${lo}–${hi} (over ${lo} on ${more} of ${all.length} host-runs)`} | ` +
            `${ratio("wallS")} | ${ratio("clientCpuS")} |`,
        );
      }
      if (r.connections.length > 0) {
        const all = r.connections.flat();
        const more = all.filter((n) => n > 1).length;
        console.log(
          `| ${r.name} | connections per host in lastOperation after up | | | | | ` +
            `${Math.min(...all)}–${Math.max(...all)} (over 1 on ${more} of ${all.length} host-runs) | | |`,
        );
      }
    }
    const one = results.find((r) => r.name.startsWith("1 ") && !r.name.endsWith("floor"));
    const three = results.find((r) => r.name.startsWith("3 ") && !r.name.endsWith("floor"));
    for (const c of one && three ? COMMANDS : []) {
      const m = (r: NonNullable<typeof one>, k: "wallS" | "clientCpuS") =>
        median(r.steps.map((x) => x[c][k]));
      console.log(
        `- ${c}: 3 allowlists per host / 1: wall ${(m(three!, "wallS") / m(one!, "wallS")).toFixed(2)}x, ` +
          `client CPU ${(m(three!, "clientCpuS") / m(one!, "clientCpuS")).toFixed(2)}x`,
      );
    }
    // Hosts that took more than one login: in what order their sshd saw logins and disconnects.
    for (const r of results)
      for (const c of COMMANDS) {
        const orders = r.steps.flatMap((x) => x[c].order.filter((o) => (o.match(/L/g) ?? []).length > 1));
        if (orders.length === 0) continue;
        const counts = new Map<string, number>();
        for (const o of orders) counts.set(o, (counts.get(o) ?? 0) + 1);
        console.log(
          `- ${r.name}, ${c}: hosts with more than one login, sshd's order of logins (L) and disconnects (D): ` +
            [...counts].map(([o, n]) => `${o} x${n}`).join(", "),
        );
      }
    console.log(`\n# loadavg at end ${loadavg()}`);
  } finally {
    for (const p of projects) await p.dispose();
    await lab.down();
    hostCpu.remove();
    clientCpu.remove();
    providerCpu.remove();
    rmSync(wrapperDir, { recursive: true, force: true });
  }
}

// `node -e BOOT args` puts args right after the node binary; a compiled run has the script first.
main(process.argv.slice(1).filter((a) => !a.endsWith(".js"))).catch((e) => {
  console.error(e);
  process.exit(1);
});
