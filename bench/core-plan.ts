/**
 * Benchmark of the pure rule engine at ruleset sizes users reach (10,000 sources).
 * Prints timings; asserts nothing (figures go to bench/README.md).
 *
 *   npx tsc --outDir bin/bench --rootDir . --module commonjs --target es2022 --esModuleInterop \
 *     --skipLibCheck --strict bench/core-plan.ts && node bin/bench/bench/core-plan.js [sources]
 */
import { readFileSync } from "fs";
import { join } from "path";
import {
  fingerprint,
  parseFilterTable,
  planAllowlist,
  renderDesiredRules,
  validateAllowlist,
  type AllowlistSpec,
} from "../provider/core";
import { applyPayload } from "../test/core/support/simulate";

const N = Number(process.argv[2] ?? 10000);
const RUNS = 7;

function median(fn: () => unknown): number {
  const times: number[] = [];
  fn(); // warm-up (JIT)
  for (let i = 0; i < RUNS; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return times.sort((a, b) => a - b)[Math.floor(RUNS / 2)];
}

function sources(n: number, offset = 0): string[] {
  // Half IPv4 /32 hosts inside 198.18.0.0/15, half IPv6 /64s inside 2001:db8::/32.
  const out: string[] = [];
  for (let i = offset; i < offset + n; i++) {
    out.push(
      i % 2 === 0
        ? `198.${18 + ((i >> 16) & 1)}.${(i >> 8) & 255}.${i & 255}`
        : `2001:db8:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::/64`,
    );
  }
  return out;
}

function spec(list: string[]): AllowlistSpec {
  const v = validateAllowlist({ port: 8080, protocols: ["tcp", "udp"], sources: list }, "web");
  if (!v.ok) throw new Error(JSON.stringify(v.failures.slice(0, 3)));
  return v.spec;
}

const fixtures = join(__dirname, "..", "test", "core", "fixtures", "docker20-fresh");
// Works both from bench/ (ts) and from bin/bench/bench/ (compiled).
const fixtureDir = [
  fixtures,
  join(__dirname, "..", "..", "..", "test", "core", "fixtures", "docker20-fresh"),
].find((d) => {
  try {
    readFileSync(join(d, "iptables-save.v4.txt"));
    return true;
  } catch {
    return false;
  }
})!;
const fresh = {
  ipv4: readFileSync(join(fixtureDir, "iptables-save.v4.txt"), "utf8"),
  ipv6: readFileSync(join(fixtureDir, "iptables-save.v6.txt"), "utf8"),
};

const list = sources(N);
const desired = spec(list);
const create = planAllowlist(fresh, desired, "web");
const applied = {
  ipv4: applyPayload(fresh.ipv4, create.families.ipv4!.payload, "ipv4"),
  ipv6: applyPayload(fresh.ipv6, create.families.ipv6!.payload, "ipv6"),
};
const plusOne = spec([...list, "198.19.255.254"]);

const rows: [string, number][] = [
  [`validate ${N} sources`, median(() => spec(list))],
  [
    `render desired rules (v4 + v6)`,
    median(() => [renderDesiredRules(desired, "ipv4"), renderDesiredRules(desired, "ipv6")]),
  ],
  [`plan create on Docker 20.10 (render + payload)`, median(() => planAllowlist(fresh, desired, "web"))],
  [
    `parse live table with ${N} rules (v4 + v6)`,
    median(() => [parseFilterTable(applied.ipv4, "ipv4"), parseFilterTable(applied.ipv6, "ipv6")]),
  ],
  [`plan in sync (parse + compare)`, median(() => planAllowlist(applied, desired, "web"))],
  [`plan one source added`, median(() => planAllowlist(applied, plusOne, "web"))],
  [`plan delete`, median(() => planAllowlist(applied, null, "web"))],
  [
    `fingerprint (v4 + v6)`,
    median(() => [fingerprint(applied.ipv4, "web"), fingerprint(applied.ipv6, "web")]),
  ],
  [`validate + plan in sync, end to end`, median(() => planAllowlist(applied, spec(list), "web"))],
];
if (!planAllowlist(applied, desired, "web").inSync) throw new Error("bench state is not in sync");
console.log(`node ${process.version}, ${N} sources, median of ${RUNS} runs after one warm-up`);
for (const [name, ms] of rows) console.log(`${name.padEnd(48)} ${ms.toFixed(1).padStart(8)} ms`);
console.log(
  `payload size v4/v6: ${create.families.ipv4!.payload.length} / ${create.families.ipv6!.payload.length} bytes`,
);
