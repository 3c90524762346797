/**
 * How long the lab takes to come up and go down: 3 real Docker hosts, and 20 light hosts.
 * Each run is checked before it counts (a probe through a published port, an SSH login on
 * every host), so a fast but broken lab cannot post a number.
 *
 * Run as root (transpile-only, no build):
 *   node -e 'const ts=require("typescript"),fs=require("fs");require.extensions[".ts"]=(m,f)=>m._compile(
 *     ts.transpileModule(fs.readFileSync(f,"utf8"),{compilerOptions:{module:1,target:9}}).outputText,f);
 *     require("./bench/lab-bringup.ts")' [runs]
 */
import { execFile } from "child_process";
import { startLab, Lab, StartLabOptions } from "../lab";

interface Scenario {
  readonly name: string;
  readonly options: StartLabOptions;
}

const scenarios: readonly Scenario[] = [
  { name: "3 docker hosts, 2 clients, IPv6", options: { docker: 3, light: 0, clients: 2, ipv6: true } },
  {
    name: "20 light hosts (docker29 layout)",
    options: { docker: 0, light: 20, clients: 0, lightLayout: "docker29" },
  },
];

function ssh(lab: Lab, host: Lab["hosts"][number]): Promise<boolean> {
  return new Promise((resolve) => {
    execFile("ssh", lab.sshArgv(host, "root", "iptables -S DOCKER-USER"), { timeout: 20000 }, (err, stdout) =>
      resolve(!err && stdout.includes("-N DOCKER-USER")),
    );
  });
}

async function once(s: Scenario): Promise<{ upMs: number; checkMs: number; downMs: number }> {
  const t0 = performance.now();
  const lab = await startLab(s.options);
  const t1 = performance.now();
  try {
    const logins = await Promise.all(lab.hosts.map((h) => ssh(lab, h)));
    if (!logins.every(Boolean))
      throw new Error(`${s.name}: SSH login failed on ${logins.filter((x) => !x).length} hosts`);
    for (const h of lab.hosts.filter((x) => x.kind === "docker")) {
      const ok = await lab.probe(lab.clients[0], h, 8080, "tcp");
      if (!ok) throw new Error(`${s.name}: ${h.name}:8080 not reachable from ${lab.clients[0].name}`);
    }
  } finally {
    const t2 = performance.now();
    await lab.down();
    const t3 = performance.now();
    // eslint-disable-next-line no-unsafe-finally
    return { upMs: t1 - t0, checkMs: t2 - t1, downMs: t3 - t2 };
  }
}

async function main(): Promise<void> {
  const runs = Number(process.argv[process.argv.length - 1]) || 3;
  for (const s of scenarios) {
    const results = [];
    for (let i = 0; i < runs; i++) results.push(await once(s));
    const fmt = (xs: number[]) => xs.map((x) => (x / 1000).toFixed(2)).join(" ");
    console.log(
      `${s.name}: up ${fmt(results.map((r) => r.upMs))} s | all logins+probes ${fmt(results.map((r) => r.checkMs))} s | down ${fmt(results.map((r) => r.downMs))} s`,
    );
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
