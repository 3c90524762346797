/**
 * What applying big allowlists costs through the real SSH edge, on lab hosts (real sshd, real
 * iptables in a network namespace). Prints figures; asserts only that each run did what it
 * claims (rules live and in sync, host back to its starting state), so a broken run cannot post
 * a number. Figures go to bench/README.md.
 *
 * Run as root (transpile-only, no build; lab/index.ts finds lab.sh beside itself):
 *   node -e 'const ts=require("typescript"),fs=require("fs");require.extensions[".ts"]=(m,f)=>m._compile(
 *     ts.transpileModule(fs.readFileSync(f,"utf8"),{compilerOptions:{module:1,target:9}}).outputText,f);
 *     require("./bench/apply.ts")' [runs] [--parallel | --parallel-only]
 *
 * The operations go through `syncHost` with `convergeOptions`, the plan and verify with which the
 * provider converges a host; wrapped, those callbacks double as timestamps of the exchanges. The
 * 20-host run uses `lifecycle.create`. Light host: 10,000 and 50,000 sources, with how long the
 * host held its lock (a waiter on the lock in the host's namespaces, see `lockWaiter`) and the
 * state one such allowlist puts in the stack.
 *
 * Under the lab lock when other work runs on the machine: `flock /work/lab.lock node -e ...`.
 */
import { execFileSync, spawn } from "child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";
import { startLab, type Lab, type LabHost } from "../lab";
import {
  planAllowlist,
  renderSetLines,
  validateAllowlist,
  type AllowlistSpec,
  type FamilyPlan,
  type Plan,
} from "../provider/core";
import { applyPayload } from "../test/core/support/simulate";
import { convergeOptions, HOST_LOCK_PATH, sshPool, syncHost, type HostOutcome } from "../provider/host";
import { check, create, remove } from "../provider/pulumi/lifecycle";
import { BOOT_PREFIX, fmt, machineLine } from "./support";

const RULE = "bench";

/** Mixed sources in lab ranges, none overlapping: 90% IPv4 /32, 2% IPv4 /24, 8% IPv6 /64. */
export function sources(n: number): string[] {
  const out: string[] = [];
  const n24 = Math.min(200, Math.floor(n * 0.02));
  const n6 = Math.floor(n * 0.08);
  const n32 = n - n24 - n6;
  for (let i = 0; i < n32; i++) out.push(`198.19.${i >> 8}.${i & 255}`);
  for (let i = 0; i < n24; i++) out.push(`198.18.${50 + i}.0/24`);
  for (let i = 0; i < n6; i++)
    out.push(`2001:db8:${(0x100 + (i >> 16)).toString(16)}:${(i & 0xffff).toString(16)}::/64`);
  return out;
}

function spec(list: string[]): AllowlistSpec {
  const v = validateAllowlist({ port: 8080, protocols: ["tcp", "udp"], sources: list, ruleName: RULE }, RULE);
  if (!v.ok) throw new Error(`bench allowlist refused: ${JSON.stringify(v.failures.slice(0, 3))}`);
  return v.spec;
}

/** Timestamps (ms since the call) of the phases of one syncHost operation. */
interface Timed {
  readonly outcome: HostOutcome<Plan>;
  readonly wallMs: number;
  /** Connect + auth + exec + host reads state under the lock (exchange 1 answered). */
  readonly readMs: number;
  /** Client planning. */
  readonly planMs: number;
  /** Plan sent -> host ran --test, restore, save and sent the new state (exchange 2 answered). */
  readonly applyMs?: number;
  /** Client verification of the new state. */
  readonly verifyMs?: number;
  /** Commit line -> conntrack, persist (iptables-save to file), exit. */
  readonly commitMs?: number;
  /** How long the host held its lock, by the host's clock (see {@link lockWaiter}). */
  readonly lockMs: number;
}

/**
 * A waiter on the host lock in the host's namespaces, started while an operation holds it: `held`
 * resolves once it is blocked on the lock (so the operation cannot release it unseen), `released`
 * with the host's clock (ms) when the lock came free. The holder writes itself into the lock
 * file as it takes the lock, so the file's mtime is when it was taken.
 */
function lockWaiter(host: LabHost): { held: Promise<void>; released: Promise<number> } {
  const child = spawn("nsenter", [
    "-t",
    String(host.nsPid),
    "-n",
    "-m",
    "--",
    "sh",
    "-c",
    `exec 8>>${HOST_LOCK_PATH}; if flock -n 8; then echo free; exit 0; fi; echo held; flock 8; ` +
      `date +%s%N; stat -c %.9Y ${HOST_LOCK_PATH}`,
  ]);
  let out = "";
  let onHeld: () => void = () => undefined;
  const held = new Promise<void>((resolve) => (onHeld = resolve));
  child.stdout.on("data", (b: Buffer) => {
    out += b.toString();
    if (out.startsWith("held\n")) onHeld();
  });
  const released = new Promise<number>((resolve, reject) =>
    child.on("close", () => {
      const [state, releasedNs, takenS] = out.trim().split("\n");
      if (state !== "held")
        reject(new Error(`${host.name}: the lock was not held when the plan was asked for`));
      else resolve(Number(BigInt(releasedNs) / 1000n) / 1000 - Number(takenS) * 1000);
      onHeld();
    }),
  );
  return { held, released };
}

async function timedSync(
  lab: Lab,
  host: LabHost,
  desired: AllowlistSpec | null,
  cutConntrack = true,
): Promise<Timed> {
  const t0 = performance.now();
  let tPlan = 0;
  let tPlanned = 0;
  let tVerify = 0;
  let tVerified = 0;
  let waiter: ReturnType<typeof lockWaiter> | undefined;
  // The provider's own plan and verify (convergeOptions), timed from outside.
  const base = convergeOptions(desired, { ruleName: RULE }, { cutConntrack });
  const outcome = await syncHost<Plan>(
    { host: host.ipv4, hostKey: host.hostKey, privateKey: lab.clientKey.privateKey },
    {
      ...base,
      plan: async (live, snapshot) => {
        tPlan = performance.now();
        // The host holds its lock while it waits for the plan: wait on it too, to see it released.
        waiter = lockWaiter(host);
        const p = await base.plan(live, snapshot);
        tPlanned = performance.now();
        await waiter.held;
        return p;
      },
      verify: (family, saveText, plan, ipsets) => {
        if (tVerify === 0) tVerify = performance.now();
        const problems = base.verify(family, saveText, plan, ipsets);
        tVerified = performance.now();
        return problems;
      },
    },
  );
  const tEnd = performance.now();
  if (waiter === undefined) throw new Error(`${host.name}: the operation never asked for a plan`);
  return {
    lockMs: await waiter.released,
    outcome,
    wallMs: tEnd - t0,
    readMs: tPlan - t0,
    planMs: tPlanned - tPlan,
    ...(tVerify > 0
      ? { applyMs: tVerify - tPlanned, verifyMs: tVerified - tVerify, commitMs: tEnd - tVerified }
      : {}),
  };
}

async function sh(lab: Lab, host: LabHost, cmd: string): Promise<string> {
  const r = await lab.hostExec(host, cmd);
  if (r.code !== 0)
    throw new Error(`${host.name}: '${cmd.slice(0, 120)}' exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Filter tables without counters, and the names of the host's ipsets, to compare states. */
async function state(lab: Lab, host: LabHost): Promise<{ ipv4: string; ipv6: string; sets: string }> {
  const clean = (s: string) =>
    s
      .split("\n")
      .filter((l) => !l.startsWith("#"))
      .map((l) => l.replace(/\[\d+:\d+\]/, ""))
      .join("\n");
  return {
    ipv4: clean(await sh(lab, host, "iptables-save -t filter")),
    ipv6: clean(await sh(lab, host, "ip6tables-save -t filter")),
    sets: await sh(lab, host, "ipset list -n"),
  };
}

/**
 * Host time of one family's apply: the same texts the edge sent (the family's ipset build where it
 * has one, its iptables-restore --noflush transaction, the ipset destroys after it), run in the
 * host's namespace, timed there with date +%s%N around the calls only.
 */
async function hostRestoreMs(
  lab: Lab,
  host: LabHost,
  dir: string,
  bin: string,
  fam: FamilyPlan,
): Promise<number> {
  const f = join(dir, `payload-${bin}`);
  writeFileSync(f, fam.payload);
  writeFileSync(`${f}.sets`, fam.sets?.apply ?? "");
  writeFileSync(`${f}.drop`, fam.sets?.drop ?? "");
  const out = await sh(
    lab,
    host,
    `s=$(date +%s%N); { [ ! -s ${f}.sets ] || ipset -exist restore < ${f}.sets; } && ${bin}-restore -w 10 --noflush < ${f} && ` +
      `{ [ ! -s ${f}.drop ] || ipset -exist restore < ${f}.drop; } || exit 1; e=$(date +%s%N); echo $(( (e - s) / 1000 ))`,
  );
  return Number(out.trim()) / 1000;
}

interface Scenario {
  readonly name: string;
  readonly host: LabHost;
  readonly n: number;
  /**
   * Delete with the provider's default conntrack cut. At 10,000 sources the cut is one
   * `conntrack -D` process per source and protocol (20,002 calls, ~65 per second here), which
   * outlasts the client's 210 s timeout; those runs measure the delete without the cut.
   */
  readonly cutOnDelete: boolean;
}

interface RunFigures {
  create: Timed;
  noChange: Timed;
  update: Timed;
  remove: Timed;
  restore: Record<"create" | "update" | "delete", { v4: number; v6: number }>;
}

async function oneRun(lab: Lab, s: Scenario, dir: string): Promise<RunFigures> {
  const list = sources(s.n);
  const big = spec(list);
  const bigger = spec([...list, "198.19.250.1"]);
  const start = await state(lab, s.host);

  const created = await timedSync(lab, s.host, big);
  const noChange = await timedSync(lab, s.host, big);
  const updated = await timedSync(lab, s.host, bigger);
  const removed = await timedSync(lab, s.host, null, s.cutOnDelete);
  for (const [what, t, applied] of [
    ["create", created, true],
    ["no-change", noChange, false],
    ["update", updated, true],
    ["delete", removed, true],
  ] as const) {
    if (t.outcome.applied !== applied) throw new Error(`${s.name} ${what}: applied=${t.outcome.applied}`);
  }
  const after = await state(lab, s.host);
  if (JSON.stringify(after) !== JSON.stringify(start))
    throw new Error(`${s.name}: delete did not restore the start state`);

  // The same three transactions again, straight in the host's namespace, timed there.
  const restore = {} as RunFigures["restore"];
  const pairs = [
    ["create", created],
    ["update", updated],
    ["delete", removed],
  ] as const;
  for (const [what, t] of pairs) {
    const fams = t.outcome.plan.families;
    restore[what] = {
      v4: fams.ipv4 ? await hostRestoreMs(lab, s.host, dir, "iptables", fams.ipv4) : 0,
      v6: fams.ipv6 ? await hostRestoreMs(lab, s.host, dir, "ip6tables", fams.ipv6) : 0,
    };
  }
  const again = await state(lab, s.host);
  if (JSON.stringify(again) !== JSON.stringify(start))
    throw new Error(`${s.name}: replaying create/update/delete did not end in the start state`);
  // Saved files were written by the edge; leave them as the delete left them.
  return { create: created, noChange, update: updated, remove: removed, restore };
}

function printScenario(s: Scenario, runs: RunFigures[]): void {
  const ops = [
    ["create", (r: RunFigures) => r.create],
    ["no change", (r: RunFigures) => r.noChange],
    ["update +1", (r: RunFigures) => r.update],
    ["delete", (r: RunFigures) => r.remove],
  ] as const;
  console.log(
    `\n### ${s.name}: ${s.n} sources, ${runs.length} runs, median (min–max)` +
      (s.cutOnDelete ? "" : "; delete without the conntrack cut (cutConntrack: false)"),
  );
  console.log(
    "| operation | wall ms | conns | round trips | read ms | plan ms | apply ms | verify ms | commit+persist ms | host lock held ms |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const [name, get] of ops) {
    const ts = runs.map(get);
    const opt = (k: "applyMs" | "verifyMs" | "commitMs") =>
      ts.every((t) => t[k] !== undefined) ? fmt(ts.map((t) => t[k]!)) : "–";
    const uniq = (xs: number[]) => [...new Set(xs)].join("/");
    console.log(
      `| ${name} | ${fmt(ts.map((t) => t.wallMs))} | ${uniq(ts.map((t) => t.outcome.stats.connections))} | ` +
        `${uniq(ts.map((t) => t.outcome.stats.roundTrips))} | ${fmt(ts.map((t) => t.readMs))} | ` +
        `${fmt(ts.map((t) => t.planMs))} | ${opt("applyMs")} | ${opt("verifyMs")} | ${opt("commitMs")} | ` +
        `${fmt(ts.map((t) => t.lockMs))} |`,
    );
  }
  console.log(
    "\nHost time of the apply alone (the same ipset and iptables-restore --noflush input, in the host netns), ms:",
  );
  for (const what of ["create", "update", "delete"] as const) {
    console.log(
      `- ${what}: IPv4 ${fmt(
        runs.map((r) => r.restore[what].v4),
        1,
      )}, IPv6 ${fmt(
        runs.map((r) => r.restore[what].v6),
        1,
      )}`,
    );
  }
  const p = runs[0].create.outcome.plan.families;
  console.log(
    `- create payload bytes (iptables-restore + ipset restore input): IPv4 ${p.ipv4?.payload.length ?? 0} + ${p.ipv4?.sets?.apply.length ?? 0}, ` +
      `IPv6 ${p.ipv6?.payload.length ?? 0} + ${p.ipv6?.sets?.apply.length ?? 0}`,
  );
}

/** 1,000 rules added one `iptables -A` at a time, the way a per-rule tool does it. */
async function perRule(lab: Lab, host: LabHost, n: number, runs: number): Promise<void> {
  const ms: number[] = [];
  for (let r = 0; r < runs; r++) {
    const out = await sh(
      lab,
      host,
      `iptables -N DPA-perrule; s=$(date +%s%N); i=0; while [ $i -lt ${n} ]; do ` +
        `iptables -w 10 -A DPA-perrule -s 198.19.$((i / 256)).$((i % 256))/32 -p tcp -m tcp --dport 8080 ` +
        `-m comment --comment "dpa:perrule" -j RETURN || exit 1; i=$((i + 1)); done; e=$(date +%s%N); ` +
        `c=$(iptables -S DPA-perrule | grep -c -- '-A DPA-perrule'); iptables -F DPA-perrule; iptables -X DPA-perrule; ` +
        `echo "$(( (e - s) / 1000000 )) $c"`,
    );
    const [t, count] = out.trim().split(" ").map(Number);
    if (count !== n) throw new Error(`per-rule: ${count} rules made, wanted ${n}`);
    ms.push(t);
  }
  console.log(
    `\n### ${n} rules with one \`iptables -A\` each (${host.name}): ${fmt(ms)} ms, median (min–max) of ${runs}`,
  );
}

/** Child mode: plan N sources (validate, create plan, in-sync plan) and print peak RSS in MB. */
function rssChild(n: number, v4File: string, v6File: string): void {
  // A host with ipset and none of our sets yet; after the apply, the sets as the plan builds them.
  const live = { ipv4: readFileSync(v4File, "utf8"), ipv6: readFileSync(v6File, "utf8"), ipsets: "" };
  const before = process.resourceUsage().maxRSS;
  const s = spec(sources(n));
  const p = planAllowlist(live, s, RULE);
  const applied = {
    ipv4: p.families.ipv4 ? applyPayload(live.ipv4, p.families.ipv4.payload, "ipv4") : live.ipv4,
    ipv6: p.families.ipv6 ? applyPayload(live.ipv6, p.families.ipv6.payload, "ipv6") : live.ipv6,
    ipsets: [...renderSetLines(s, "ipv4"), ...renderSetLines(s, "ipv6")].map((l) => `${l}\n`).join(""),
  };
  const again = planAllowlist(applied, s, RULE);
  if (!again.inSync)
    throw new Error(`rss child: plan after applying is not in sync (${again.changes.slice(0, 3)})`);
  console.log(JSON.stringify({ n, baseMB: before / 1024, peakMB: process.resourceUsage().maxRSS / 1024 }));
}

function rss(runs: number, v4File: string, v6File: string): void {
  console.log("\n### Peak RSS of a node process validating + planning create and in-sync (MB)");
  for (const n of [10000, 50000]) {
    const peaks: number[] = [];
    let base = 0;
    for (let r = 0; r < runs; r++) {
      const out = execFileSync(process.execPath, ["-e", BOOT, "rss", String(n), v4File, v6File], {
        encoding: "utf8",
        cwd: join(__dirname, ".."),
      });
      const j = JSON.parse(out.trim().split("\n").pop()!) as { baseMB: number; peakMB: number };
      peaks.push(j.peakMB);
      base = j.baseMB;
    }
    console.log(
      `- ${n} sources: peak ${fmt(peaks)} MB (process after loading modules: ${base.toFixed(0)} MB)`,
    );
  }
}

const BOOT = BOOT_PREFIX + 'require("./bench/apply.ts")';

/**
 * What the stack's state holds for one allowlist of n sources: the resource's inputs (as `check`
 * returns them: the declaration, ruleName and the rendered rules) and its outputs after a real
 * `lifecycle.create` (inputs + chain, live rules, findings, lastOperation...), as JSON bytes.
 * The allowlist is deleted again, leaving the host as it was.
 */
async function stateSize(lab: Lab, host: LabHost, n: number): Promise<{ inputs: number; outputs: number }> {
  const c = check(
    {},
    {
      connection: { host: host.ipv4, hostKey: host.hostKey, privateKey: lab.clientKey.privateKey },
      resourceName: RULE,
      port: 8080,
      protocols: ["tcp", "udp"],
      sources: sources(n),
    },
  );
  if (c.inputs === undefined) throw new Error(`state size: check refused ${n} sources`);
  const start = await state(lab, host);
  const { id, outs } = await create(c.inputs);
  await remove(id, outs);
  sshPool.closeAll();
  if (JSON.stringify(await state(lab, host)) !== JSON.stringify(start))
    throw new Error(`state size: delete of ${n} sources did not restore the start state`);
  return { inputs: JSON.stringify(c.inputs).length, outputs: JSON.stringify(outs).length };
}

async function parallel(runs: number): Promise<void> {
  const ms: number[] = [];
  for (let r = 0; r < runs; r++) {
    const lab = await startLab({ docker: 0, light: 20, clients: 0, lightLayout: "docker29", ipv6: true });
    try {
      const inputs = lab.hosts.map(
        (h) =>
          check(
            {},
            {
              connection: { host: h.ipv4, hostKey: h.hostKey, privateKey: lab.clientKey.privateKey },
              resourceName: RULE,
              port: 8080,
              protocols: ["tcp", "udp"],
              sources: sources(1000),
            },
          ).inputs!,
      );
      const t0 = performance.now();
      const outs = await Promise.all(inputs.map((i) => create(i)));
      ms.push(performance.now() - t0);
      if (!outs.every((o) => o.outs.lastOperation.applied && o.outs.lastOperation.connections === 1))
        throw new Error("parallel: a create did not apply over one connection");
    } finally {
      await lab.down();
    }
  }
  console.log(`\n### 20 light hosts, 1,000 sources each, lifecycle.create in parallel: ${fmt(ms)} ms wall`);
}

async function main(args: string[]): Promise<void> {
  if (args[0] === "rss") return rssChild(Number(args[1]), args[2], args[3]);
  const runs = Number(args.find((a) => /^\d+$/.test(a)) ?? 3);
  const dir = mkdtempSync(join(tmpdir(), "dpa-bench-"));
  console.log(machineLine("bench/apply.ts"));
  try {
    if (args.includes("--parallel-only")) return await parallel(runs);
    const light = await startLab({ docker: 0, light: 1, clients: 0, lightLayout: "docker29", ipv6: true });
    try {
      const h = light.hosts[0];
      for (const n of [10000, 50000]) {
        const s: Scenario = {
          name: "light host (docker29 layout, IPv4+IPv6)",
          host: h,
          n,
          // The default since the cut lists conntrack once per family (it used to run one
          // conntrack -D per source: minutes for a 10,000-source delete).
          cutOnDelete: true,
        };
        const figures: RunFigures[] = [];
        for (let r = 0; r < runs; r++) figures.push(await oneRun(light, s, dir));
        printScenario(s, figures);
      }
      console.log("\n### State of one allowlist (JSON bytes the stack holds for it)");
      for (const n of [10000, 50000]) {
        const size = await stateSize(light, h, n);
        console.log(
          `- ${n} sources: inputs ${size.inputs.toLocaleString("en")}, outputs ${size.outputs.toLocaleString("en")}`,
        );
      }
      await perRule(light, h, 1000, runs);
      writeFileSync(join(dir, "s4"), await sh(light, h, "iptables-save -t filter"));
      writeFileSync(join(dir, "s6"), await sh(light, h, "ip6tables-save -t filter"));
      rss(runs, join(dir, "s4"), join(dir, "s6"));
    } finally {
      await light.down();
    }
    const docker = await startLab({ docker: 1, light: 0, clients: 0, ipv6: true });
    try {
      const s: Scenario = {
        name: `docker host (Docker ${docker.hosts[0].dockerVersion ?? "?"})`,
        host: docker.hosts[0],
        n: 1000,
        cutOnDelete: true,
      };
      const figures: RunFigures[] = [];
      for (let r = 0; r < runs; r++) figures.push(await oneRun(docker, s, dir));
      printScenario(s, figures);
    } finally {
      await docker.down();
    }
    if (args.includes("--parallel")) await parallel(runs);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// `node -e BOOT args` puts args right after the node binary; a compiled run has the script first.
main(process.argv.slice(1).filter((a) => !a.endsWith(".js"))).catch((e) => {
  console.error(e);
  process.exit(1);
});
