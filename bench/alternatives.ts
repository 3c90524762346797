/**
 * The same 50-source allowlist on one real Docker host (Docker 29 in a lab namespace, reached over
 * real SSH), done by this project and by what users would pick instead, in one run:
 * - this project's provider operation (`lifecycle.create`, then `update` with nothing to change,
 *   `read` as a refresh does, `remove`), in this process, each over a connection of its own (the
 *   pool is emptied between operations, as a new `pulumi up` process starts without one);
 * - a whole `pulumi up` through the real CLI (create, no-change `up`, no-change `up --refresh`,
 *   which reads the host, and `destroy`);
 * - Ansible's `iptables` module as its users write it (a task looping over the sources into
 *   DOCKER-USER, then a DROP; Debian's ansible-core, OpenSSH with its ControlPersist defaults),
 *   default and with pipelining, create and no-change;
 * - a per-rule loop over one SSH connection (`iptables -C ... || iptables -A ...` per source).
 * Each figure: wall time on the client, client CPU (the process tree of the tool: Pulumi CLI +
 * language host + provider, ansible-playbook + ssh, ssh; in-process operations: this process),
 * host CPU (everything the host's sshd forked for it: sessions, shells, iptables, python), and the
 * SSH logins the host's sshd accepted. Then host CPU per operation of a 10-source allowlist, beside
 * `ssh host true`.
 *
 * Every run is checked before it counts: the rules are in DOCKER-USER after a create, a no-change
 * run changed nothing, and DOCKER-USER is back as Docker made it after each tool's clean-up.
 *
 * Run as root, under the lab lock, with the engine built (`bash scripts/engine.sh`) and Debian's
 * ansible-core installed (`apt-get update && apt-get install -y ansible-core`):
 *   flock /work/lab.lock node -e 'const ts=require("typescript"),fs=require("fs");require.extensions[".ts"]=(m,f)=>m._compile(
 *     ts.transpileModule(fs.readFileSync(f,"utf8"),{compilerOptions:{module:1,target:9}}).outputText,f);
 *     require("./bench/alternatives.ts")' [runs]
 */
import { execFile } from "child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";
import { comparableSave, startLab, type Lab, type LabHost } from "../lab";
import { sshPool } from "../provider/host";
import { check, create, read, remove, update, type Outputs } from "../provider/pulumi/lifecycle";
import { allowlistProject, buildPackage, PulumiProject } from "../test/engine/support";
import { acceptedLogins, CpuAccount, fmt, loadavg, machineLine, median } from "./support";

const PORT = 8080;

/** n IPv4 /32 sources in the lab's benchmarking range. */
const sourcesOf = (n: number): string[] => Array.from({ length: n }, (_, i) => `198.19.${i >> 8}.${i & 255}`);

/** One measured step of one tool. */
interface Step {
  readonly wallS: number;
  readonly clientCpuS: number;
  readonly hostCpuS: number;
  readonly logins: number;
}

/** What each measurement sees: the host's CPU account, its sshd log, the client account. */
interface Meter {
  readonly lab: Lab;
  readonly host: LabHost;
  readonly hostCpu: CpuAccount;
  readonly clientCpu: CpuAccount;
}

/**
 * Runs `fn`, timing it and counting the host's CPU and logins. `inProcess`: the client is this
 * process (its CPU from process.cpuUsage); else the client is whatever runs in `clientCpu`.
 */
async function measure(m: Meter, inProcess: boolean, fn: () => Promise<void>): Promise<Step> {
  const logins0 = acceptedLogins(m.lab, m.host);
  const host0 = m.hostCpu.seconds();
  const client0 = m.clientCpu.seconds();
  const own0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const wallS = (performance.now() - t0) / 1000;
  const own = process.cpuUsage(own0);
  // sshd logs a login before the session runs, and the session has ended when fn returned.
  return {
    wallS,
    clientCpuS: inProcess ? (own.user + own.system) / 1e6 : m.clientCpu.seconds() - client0,
    hostCpuS: m.hostCpu.seconds() - host0,
    logins: acceptedLogins(m.lab, m.host) - logins0,
  };
}

/** Runs a command in `clientCpu`; rejects with its output when it fails. */
function run(m: Meter, argv: readonly string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  const [file, ...args] = [...m.clientCpu.prefix(), ...argv];
  return new Promise<string>((resolve, reject) =>
    execFile(
      file,
      args,
      { maxBuffer: 64 * 1024 * 1024, cwd: opts.cwd, env: opts.env ?? process.env },
      (err, stdout, stderr) =>
        err
          ? reject(new Error(`Command failed: ${argv.join(" ").slice(0, 200)}\n${stderr}\n${stdout}`))
          : resolve(stdout),
    ),
  );
}

async function sh(m: Meter, cmd: string): Promise<string> {
  const r = await m.lab.hostExec(m.host, cmd);
  if (r.code !== 0) throw new Error(`${m.host.name}: '${cmd}' exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Rules of the filter table that name the bench's port (ours or another tool's). */
async function portRules(m: Meter): Promise<number> {
  const lines = (await sh(m, "iptables -S")).split("\n");
  return lines.filter((l) => l.startsWith("-A ") && new RegExp(`\\b${PORT}\\b`).test(l)).length;
}

// --- this project, in process --------------------------------------------------------------

function inputsOf(m: Meter, sources: readonly string[], olds: Record<string, unknown> = {}) {
  const c = check(olds, {
    connection: { host: m.host.ipv4, hostKey: m.host.hostKey, privateKey: m.lab.clientKey.privateKey },
    resourceName: "bench",
    port: PORT,
    protocols: ["tcp"],
    sources: [...sources],
  });
  if (c.inputs === undefined)
    throw new Error(`check refused the bench allowlist: ${JSON.stringify(c.failures)}`);
  return c.inputs;
}

interface ProviderRun {
  create: Step;
  noChange: Step;
  refresh: Step;
  remove: Step;
}

async function providerRun(m: Meter, sources: readonly string[]): Promise<ProviderRun> {
  const inputs = inputsOf(m, sources);
  let id = "";
  let outs: Outputs | undefined;
  const step = async (fn: () => Promise<void>) => {
    const s = await measure(m, true, fn);
    sshPool.closeAll(); // the next operation dials, as the first one of a new `pulumi up` does
    return s;
  };
  const created = await step(async () => {
    ({ id, outs } = await create(inputs));
  });
  if (!outs!.lastOperation.applied || (await portRules(m)) === 0)
    throw new Error("provider create: nothing applied");
  const noChange = await step(async () => {
    const r = await update(id, outs!, inputsOf(m, sources, outs!));
    if (r.outs.lastOperation.applied)
      throw new Error("provider update with nothing to change applied a change");
  });
  const refresh = await step(async () => {
    const r = await read(id, outs!);
    if (!r.props.inSync) throw new Error("provider read: the host is not in sync after create");
  });
  const removed = await step(() => remove(id, outs!));
  return { create: created, noChange, refresh, remove: removed };
}

// --- this project, whole `pulumi` commands --------------------------------------------------

interface PulumiRun {
  up: Step;
  upNoChange: Step;
  upRefresh: Step;
  destroy: Step;
}

async function pulumiRun(m: Meter, proj: PulumiProject): Promise<PulumiRun> {
  const prefix = m.clientCpu.prefix();
  const up = await measure(m, false, async () => void (await proj.up([], { prefix })));
  if ((await portRules(m)) === 0) throw new Error("pulumi up: no rules on the host");
  const upNoChange = await measure(m, false, async () => {
    const r = await proj.up([], { prefix });
    if (!/unchanged/.test(r.stdout) || /updated|created/.test(r.stdout.split("Resources:")[1] ?? ""))
      throw new Error(`pulumi up with nothing to change changed something:\n${r.stdout}`);
  });
  const upRefresh = await measure(m, false, async () => {
    const r = await proj.up(["--refresh"], { prefix });
    if (/updated|created/.test(r.stdout.split("Resources:")[1] ?? ""))
      throw new Error(`pulumi up --refresh with nothing to change changed something:\n${r.stdout}`);
  });
  const destroy = await measure(m, false, async () => void (await proj.destroy([], { prefix })));
  return { up, upNoChange, upRefresh, destroy };
}

// --- Ansible ---------------------------------------------------------------------------------

const PLAYBOOK = `- hosts: docker
  tasks:
    - name: Let the allowlist's sources reach ${PORT}/tcp
      ansible.builtin.iptables:
        chain: DOCKER-USER
        protocol: tcp
        destination_port: "${PORT}"
        source: "{{ item }}"
        jump: RETURN
        comment: bench allowlist
      loop: "{{ sources }}"
    - name: Drop everyone else on ${PORT}/tcp
      ansible.builtin.iptables:
        chain: DOCKER-USER
        protocol: tcp
        destination_port: "${PORT}"
        jump: DROP
        comment: bench allowlist
`;

interface AnsibleRun {
  create: Step;
  noChange: Step;
}

/** `changed=N` of the host's PLAY RECAP line. */
function recapChanged(out: string): number {
  const m = /ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0/.exec(out);
  if (m === null) throw new Error(`ansible-playbook: no clean PLAY RECAP in its output:\n${out}`);
  return Number(m[1]);
}

async function ansibleRun(m: Meter, dir: string, sources: readonly string[], pipelining: boolean) {
  writeFileSync(join(dir, "playbook.yml"), PLAYBOOK);
  writeFileSync(join(dir, "vars.json"), JSON.stringify({ sources }));
  writeFileSync(
    join(dir, "inventory.ini"),
    `[docker]\n${m.host.ipv4} ansible_user=root ansible_ssh_private_key_file=${m.lab.clientKey.privateKeyPath} ` +
      `ansible_ssh_common_args='-o UserKnownHostsFile=${m.lab.knownHostsPath}'\n`,
  );
  const cp = mkdtempSync(join(dir, "cp-"));
  const env = {
    ...process.env,
    ANSIBLE_SSH_CONTROL_PATH_DIR: cp,
    ANSIBLE_LOCAL_TEMP: join(dir, "tmp"),
    ANSIBLE_NOCOLOR: "1",
    ANSIBLE_PIPELINING: pipelining ? "True" : "False",
  };
  const play = () =>
    run(m, ["ansible-playbook", "-i", "inventory.ini", "-e", "@vars.json", "playbook.yml"], {
      cwd: dir,
      env,
    });
  // OpenSSH's ControlPersist master outlives the play by 60 s; it belongs to the run: end it.
  const endMasters = async () => {
    for (const s of readdirSync(cp))
      await run(m, ["ssh", "-O", "exit", "-o", `ControlPath=${join(cp, s)}`, "x"]);
  };
  let out = "";
  const created = await measure(m, false, async () => {
    out = await play();
    await endMasters();
  });
  if (recapChanged(out) === 0 || (await portRules(m)) !== sources.length + 1)
    throw new Error(`ansible create: expected ${sources.length + 1} rules on the host\n${out}`);
  const noChange = await measure(m, false, async () => {
    out = await play();
    await endMasters();
  });
  if (recapChanged(out) !== 0) throw new Error(`ansible with nothing to change changed something:\n${out}`);
  rmSync(cp, { recursive: true, force: true });
  return { create: created, noChange } satisfies AnsibleRun;
}

// --- a per-rule shell loop over one SSH connection -------------------------------------------

function loopScript(sources: readonly string[]): string {
  const rule = (src: string, jump: string) =>
    `DOCKER-USER ${src ? `-s ${src} ` : ""}-p tcp -m tcp --dport ${PORT} -m comment --comment bench-loop -j ${jump}`;
  return [...sources.map((s) => rule(s, "RETURN")), rule("", "DROP")]
    .map((r) => `iptables -w -C ${r} 2>/dev/null || iptables -w -A ${r} || exit 1`)
    .join("\n");
}

async function loopRun(m: Meter, sources: readonly string[]): Promise<{ create: Step; noChange: Step }> {
  const argv = m.lab.sshArgv(m.host, "root", loopScript(sources));
  const created = await measure(m, false, async () => void (await run(m, ["ssh", ...argv])));
  if ((await portRules(m)) !== sources.length + 1) throw new Error("per-rule loop: rules missing");
  const noChange = await measure(m, false, async () => void (await run(m, ["ssh", ...argv])));
  if ((await portRules(m)) !== sources.length + 1) throw new Error("per-rule loop: rules added twice");
  return { create: created, noChange };
}

// --- report ----------------------------------------------------------------------------------

function row(
  name: string,
  steps: readonly Step[],
  base?: readonly Step[],
  vsAnsible?: readonly Step[],
): string {
  const logins = [...new Set(steps.map((s) => s.logins))].join("/");
  const ratio = (of: readonly Step[] | undefined) => {
    if (of === undefined) return "";
    const x = median(of.map((s) => s.wallS)) / median(steps.map((s) => s.wallS));
    return `${x.toFixed(x < 1 ? 2 : 1)}x`;
  };
  return `| ${name} | ${fmt(
    steps.map((s) => s.wallS),
    2,
  )} | ${fmt(
    steps.map((s) => s.clientCpuS),
    2,
  )} | ${fmt(
    steps.map((s) => s.hostCpuS),
    2,
  )} | ${logins} | ${ratio(vsAnsible)} | ${ratio(base)} |`;
}

async function main(args: string[]): Promise<void> {
  const runs = Number(args.find((a) => /^\d+$/.test(a)) ?? 3);
  for (const bin of ["ansible-playbook", "ssh"]) {
    if (!process.env.PATH?.split(":").some((d) => existsSync(join(d, bin))))
      throw new Error(
        `${bin} is not on PATH; install it: apt-get update && apt-get install -y ansible-core openssh-client`,
      );
  }
  console.log(machineLine("bench/alternatives.ts"));
  const packageDir = buildPackage();
  const dir = mkdtempSync(join(tmpdir(), "dpa-bench-alt-"));
  const lab = await startLab({ docker: 1, light: 0, clients: 0 });
  const host = lab.hosts[0];
  const hostCpu = CpuAccount.create("host");
  const clientCpu = CpuAccount.create("client");
  let proj: PulumiProject | undefined;
  try {
    if (readFileSync(`/proc/${host.sshdPid}/comm`, "utf8").trim() !== "sshd")
      throw new Error(`${host.name}: pid ${host.sshdPid} is not its sshd`);
    hostCpu.add(host.sshdPid);
    const m: Meter = { lab, host, hostCpu, clientCpu };
    const start = comparableSave(await sh(m, "iptables-save -t filter"));
    const backToStart = async (what: string) => {
      if (comparableSave(await sh(m, "iptables-save -t filter")) !== start)
        throw new Error(`${what} did not leave the filter table as Docker made it`);
    };
    const flush = async (what: string) => {
      await sh(m, "iptables -F DOCKER-USER");
      await backToStart(what);
    };
    console.log(
      `# host ${host.name}: Docker ${host.dockerVersion}, ${(await sh(m, "iptables -V")).trim()}; ` +
        `${(await run(m, ["ansible-playbook", "--version"])).split("\n")[0]}; runs ${runs}`,
    );
    const sources = sourcesOf(50);
    proj = await allowlistProject(
      lab,
      packageDir,
      JSON.stringify([
        {
          name: "bench",
          args: {
            connection: { host: host.ipv4, hostKey: host.hostKey },
            port: PORT,
            protocols: ["tcp"],
            sources,
          },
        },
      ]),
    );
    const provider: ProviderRun[] = [];
    const pulumi: PulumiRun[] = [];
    const ansible: AnsibleRun[] = [];
    const piped: AnsibleRun[] = [];
    const loop: { create: Step; noChange: Step }[] = [];
    for (let r = 0; r < runs; r++) {
      provider.push(await providerRun(m, sources));
      await backToStart("provider delete");
      pulumi.push(await pulumiRun(m, proj));
      await backToStart("pulumi destroy");
      ansible.push(await ansibleRun(m, dir, sources, false));
      await flush("ansible");
      piped.push(await ansibleRun(m, dir, sources, true));
      await flush("ansible (pipelining)");
      loop.push(await loopRun(m, sources));
      await flush("per-rule loop");
    }
    console.log(`\n### 50 IPv4 sources, 8080/tcp, one Docker host: ${runs} runs, median (min–max)`);
    console.log(
      "| tool, step | wall s | client CPU s | host CPU s | SSH logins | Ansible's wall / this | per-rule loop's wall / this |",
    );
    console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    const get = <T, K extends keyof T>(xs: T[], k: K) => xs.map((x) => x[k]) as unknown as Step[];
    console.log(
      row("provider operation: create", get(provider, "create"), get(loop, "create"), get(ansible, "create")),
    );
    console.log(
      row(
        "provider operation: no change (update)",
        get(provider, "noChange"),
        get(loop, "noChange"),
        get(ansible, "noChange"),
      ),
    );
    console.log(
      row(
        "provider operation: read (refresh)",
        get(provider, "refresh"),
        get(loop, "noChange"),
        get(ansible, "noChange"),
      ),
    );
    console.log(row("provider operation: delete", get(provider, "remove")));
    console.log(row("`pulumi up`: create", get(pulumi, "up"), get(loop, "create"), get(ansible, "create")));
    console.log(
      row(
        "`pulumi up`: no change",
        get(pulumi, "upNoChange"),
        get(loop, "noChange"),
        get(ansible, "noChange"),
      ),
    );
    console.log(
      row(
        "`pulumi up --refresh`: no change",
        get(pulumi, "upRefresh"),
        get(loop, "noChange"),
        get(ansible, "noChange"),
      ),
    );
    console.log(row("`pulumi destroy`", get(pulumi, "destroy")));
    console.log(row("Ansible `iptables` module: create", get(ansible, "create")));
    console.log(row("Ansible `iptables` module: no change", get(ansible, "noChange")));
    console.log(row("Ansible, pipelining: create", get(piped, "create"), undefined, get(ansible, "create")));
    console.log(
      row("Ansible, pipelining: no change", get(piped, "noChange"), undefined, get(ansible, "noChange")),
    );
    console.log(
      row(
        "per-rule loop, one SSH connection: create",
        get(loop, "create"),
        undefined,
        get(ansible, "create"),
      ),
    );
    console.log(
      row(
        "per-rule loop, one SSH connection: no change",
        get(loop, "noChange"),
        undefined,
        get(ansible, "noChange"),
      ),
    );

    // Host CPU per operation of a small allowlist, beside an SSH login that runs nothing.
    const small = sourcesOf(10);
    const smallRuns: ProviderRun[] = [];
    const trueRuns: Step[] = [];
    for (let r = 0; r < runs; r++) {
      trueRuns.push(
        await measure(
          m,
          false,
          async () => void (await run(m, ["ssh", ...lab.sshArgv(host, "root", "true")])),
        ),
      );
      smallRuns.push(await providerRun(m, small));
      await backToStart("provider delete (10 sources)");
    }
    console.log(`\n### Host CPU per operation, 10 IPv4 sources, ${runs} runs, median (min–max)`);
    console.log("| operation | wall s | client CPU s | host CPU s | SSH logins | | |");
    console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    console.log(row("`ssh host true` (OpenSSH client)", trueRuns));
    console.log(row("provider operation: create", get(smallRuns, "create")));
    console.log(row("provider operation: no change (update)", get(smallRuns, "noChange")));
    console.log(row("provider operation: read (refresh)", get(smallRuns, "refresh")));
    console.log(row("provider operation: delete", get(smallRuns, "remove")));
    console.log(`\n# loadavg at end ${loadavg()}`);
  } finally {
    await proj?.dispose();
    await lab.down();
    hostCpu.remove();
    clientCpu.remove();
    rmSync(dir, { recursive: true, force: true });
  }
}

// `node -e BOOT args` puts args right after the node binary; a compiled run has the script first.
main(process.argv.slice(1).filter((a) => !a.endsWith(".js"))).catch((e) => {
  console.error(e);
  process.exit(1);
});
