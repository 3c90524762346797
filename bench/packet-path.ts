/**
 * The packet path with a large allowlist, on real Docker 29 hosts: new TCP connection attempts per
 * second from a listed client to a published port (DNAT to the container, through the allowlist),
 * with no allowlist, and with 10,000 sources: on Docker 29's iptables backend in the allowlist's
 * ipset (what the provider writes from 100 sources on, provider/core/ipset.ts: one lookup) and, for
 * comparison, as a linear chain (one `-s` rule per source, the client's last: the worst case, as
 * planned for a host without ipset); on its nftables backend in our table's set. Only new
 * connections walk the list: established ones take the RELATED,ESTABLISHED rule first.
 *
 * The port is published from a container where nothing listens (`-p 8081:9`): the container's
 * kernel answers each SYN with a reset, so the rate is the kernel's forwarding path and the client,
 * not a server's accept loop (busybox httpd forks per connection and capped the rate at a few
 * hundred per second on this machine, whatever the firewall did). An attempt counts when its
 * answer came back (connected or refused); one the firewall dropped would time out.
 *
 * Prints figures; asserts only that each measured state is what it claims (the allowlist applied
 * and the client let in, an unlisted client kept out), so a broken run cannot post a number.
 * Figures go to bench/README.md.
 *
 * Run as root (transpile-only, no build):
 *   node -e 'const ts=require("typescript"),fs=require("fs");require.extensions[".ts"]=(m,f)=>m._compile(
 *     ts.transpileModule(fs.readFileSync(f,"utf8"),{compilerOptions:{module:1,target:9}}).outputText,f);
 *     require("./bench/packet-path.ts")' [rounds] [seconds]
 */
import { spawn } from "child_process";
import { readFileSync } from "fs";
import { cpus } from "os";
import { startLab, type Lab, type LabClient, type LabHost } from "../lab";
import type { ConnectionArgs } from "../provider/args";
import { planAllowlist, validateAllowlist, verifyApplied, type AllowlistSpec } from "../provider/core";
import { converge, type ConvergeHooks } from "../provider/host";

const SOURCES = 10_000;
const CONCURRENCY = 16;
/** Published from a container with nothing listening on 9 (see above). */
const PORT = 8081;

/**
 * The plan for a host without ipset: the same allowlist as one `-s` rule per source (the host's
 * sets are hidden from the planner and from the verify).
 */
function linear(s: AllowlistSpec): ConvergeHooks {
  return {
    plan: (live) => planAllowlist({ ipv4: live.ipv4, ipv6: live.ipv6 }, s, s.ruleName),
    verify: (family, saveText) => verifyApplied(saveText, s, s.ruleName, family).map((f) => f.message),
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (xs: number[]) =>
  `${median(xs).toFixed(0)} (${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)})`;

/** 9,999 IPv4 /32 in 10.0.0.0/8, all sorted before the client's 198.18.0.x, then the client. */
function spec(client: string): AllowlistSpec {
  const list: string[] = [];
  for (let i = 0; i < SOURCES - 1; i++) list.push(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
  list.push(client);
  const v = validateAllowlist({ port: PORT, protocols: ["tcp"], sources: list, ipv6: "off" }, "pktbench");
  if (!v.ok) throw new Error(JSON.stringify(v.failures.slice(0, 3)));
  return v.spec;
}

/**
 * Answered TCP connection attempts (connected or refused) per second from `client` to
 * `host`:{@link PORT} over `seconds`, `CONCURRENCY` at a time (a node process inside the client's
 * namespace counts them); rejects when no attempt was answered (the firewall dropped them).
 */
function connectRate(client: LabClient, host: LabHost, seconds: number): Promise<number> {
  const script =
    `const net = require("net"); let n = 0, fail = 0; const end = Date.now() + ${seconds * 1000};` +
    `function one() { if (Date.now() >= end) return;` +
    ` const s = net.connect(${PORT}, ${JSON.stringify(host.ipv4)});` +
    ` s.setTimeout(2000, () => { fail++; s.destroy(); one(); });` +
    ` s.on("connect", () => { n++; s.destroy(); one(); });` +
    ` s.on("error", (e) => { if (e.code === "ECONNREFUSED") n++; else fail++; one(); }); }` +
    `for (let i = 0; i < ${CONCURRENCY}; i++) one();` +
    `setTimeout(() => { process.stdout.write(JSON.stringify({ n, fail })); process.exit(0); }, ${seconds * 1000 + 2500});`;
  return new Promise((resolve, reject) => {
    const child = spawn("ip", ["netns", "exec", client.netns, process.execPath, "-e", script]);
    let out = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    child.on("error", reject);
    child.on("exit", () => {
      const r = JSON.parse(out) as { n: number; fail: number };
      if (r.n === 0) return reject(new Error(`no answer from ${host.name}:${PORT} to ${client.name}`));
      resolve(r.n / seconds);
    });
  });
}

async function main(args: string[]): Promise<void> {
  const rounds = Number(args[0] ?? 5);
  const seconds = Number(args[1] ?? 5);
  const lab: Lab = await startLab({
    docker: 2,
    light: 0,
    clients: 2,
    dockerVersion: "29",
    firewallBackend: ["iptables", "nftables"],
  });
  try {
    const [listed, unlisted] = lab.clients;
    const conn = (h: LabHost): ConnectionArgs => ({
      host: h.ipv4,
      privateKey: lab.clientKey.privateKey,
      hostKey: h.hostKey,
    });
    const s = spec(listed.ipv4);
    for (const h of lab.hosts) {
      const r = await lab.hostExec(
        h,
        `docker run -d --pull never --name closed -p ${PORT}:9 dpa-lab/busybox:1 sleep 86400`,
      );
      if (r.code !== 0) throw new Error(`${h.name}: docker run failed: ${r.stderr}`);
    }
    console.log(
      `packet path, ${new Date().toISOString()}, nproc ${cpus().length}, loadavg ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}, ` +
        `Node ${process.version}; ${rounds} rounds of ${seconds} s, ${CONCURRENCY} connects at a time`,
    );
    const rows: [string, number[]][] = [];
    for (const h of lab.hosts) {
      const backend = h.firewallBackend ?? "iptables";
      const bare: number[] = [];
      const layouts =
        backend === "nftables" ? (["nftables set"] as const) : (["ipset", "linear chain"] as const);
      const rates = new Map<string, number[]>(layouts.map((l) => [l, []]));
      // Alternate bare and allowlisted rounds, so a load change on the machine hits all alike.
      for (let r = 0; r < rounds; r++) {
        bare.push(await connectRate(listed, h, seconds));
        for (const layout of layouts) {
          const o = await converge(conn(h), s, s, layout === "linear chain" ? linear(s) : {});
          if (o.plan.backend !== backend)
            throw new Error(`${h.name}: planned for ${o.plan.backend}, host runs ${backend}`);
          const chain = (await lab.hostExec(h, "iptables-save -t filter")).stdout;
          const inSet = chain.includes("--match-set dpa4-pktbench src");
          if (backend === "iptables" && inSet !== (layout === "ipset"))
            throw new Error(
              `${h.name}: ${layout} asked, the chain ${inSet ? "matches" : "does not match"} the set`,
            );
          // The unlisted client's attempts go unanswered (dropped); the listed one's are answered.
          if (
            await connectRate(unlisted, h, 1).then(
              () => true,
              () => false,
            )
          )
            throw new Error(`${h.name}: the allowlist does not keep the unlisted client out`);
          rates.get(layout)!.push(await connectRate(listed, h, seconds));
          await converge(conn(h), null, s);
        }
      }
      rows.push([`${backend}: no allowlist`, bare]);
      for (const [layout, xs] of rates) {
        rows.push([`${backend}: ${SOURCES} sources, ${layout}`, xs]);
        const ratio = median(xs) / median(bare);
        console.log(
          `${h.name} (${backend}, ${layout}): ${(ratio * 100).toFixed(1)}% of the rate without allowlist`,
        );
      }
    }
    console.log("\n| path | new connections/s, median (min–max) |\n| --- | ---: |");
    for (const [name, xs] of rows) console.log(`| ${name} | ${fmt(xs)} |`);
  } finally {
    await lab.down();
  }
}

main(process.argv.slice(1).filter((a) => !a.endsWith(".js"))).catch((err) => {
  console.error(err);
  process.exit(1);
});
