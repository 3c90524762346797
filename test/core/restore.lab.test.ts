/**
 * The rule engine against real iptables and real traffic (root; lab project).
 *
 * 1. Every golden fixture's payload passes `iptables-restore --test --noflush` and applies on
 *    top of the fixture's state in a throwaway namespace, with iptables-nft AND iptables-legacy;
 *    afterwards the host prints our rules byte for byte as rendered, and planning again is empty.
 * 2. On a real dockerd host of the lab: allowlists for the published 8080/tcp and 5353/udp let
 *    the allowed client in and keep another out (IPv4 and IPv6), containers still reach a server
 *    outside on the same ports, and deleting them restores the host's DOCKER-USER, FORWARD and
 *    INPUT (our docker-proxy jumps) exactly.
 *
 * Run: npx jest test/core/restore.lab.test.ts --selectProjects lab
 */
import { execFileSync } from "child_process";
import fc from "fast-check";
import { startLab, type Lab, type LabHost } from "../../lab";
import {
  planAllowlist,
  validateAllowlist,
  verifyApplied,
  type AllowlistSpec,
  type Family,
  type Plan,
} from "../../provider/core";
import { caseNames, loadCase } from "./support/fixtures";

jest.setTimeout(300_000);

const BIN = { ipv4: "iptables", ipv6: "ip6tables" } as const;

describe("every fixture payload applies with real iptables", () => {
  const made: string[] = [];
  afterAll(() => {
    for (const ns of made) execFileSync("ip", ["netns", "del", ns]);
  });

  const cases = caseNames()
    .map(loadCase)
    .filter((c) => {
      const plan = planAllowlist(c.live, c.desired, c.ruleName);
      return plan.families.ipv4 !== undefined || plan.families.ipv6 !== undefined;
    });
  const table = cases.flatMap((c) =>
    (["nft", "legacy"] as const).map((backend) => [c.name, backend, c] as const),
  );

  it.each(table)("%s with iptables-%s", (_name, backend, c) => {
    const ns = `dpacore${process.pid}${made.length}`;
    execFileSync("ip", ["netns", "add", ns]);
    made.push(ns);
    const run = (family: Family, tool: "restore" | "save", args: string[], input?: string): string =>
      execFileSync("ip", ["netns", "exec", ns, `${BIN[family]}-${backend}-${tool}`, ...args], {
        input,
        encoding: "utf8",
      });
    const plan = planAllowlist(c.live, c.desired, c.ruleName);
    const after: { ipv4: string | null; ipv6: string | null } = { ...c.live };
    for (const family of ["ipv4", "ipv6"] as const) {
      const live = c.live[family];
      const fp = plan.families[family];
      if (live === null || fp === undefined) continue;
      for (const set of new Set([...live.matchAll(/--match-set (\S+)/g)].map((m) => m[1]))) {
        execFileSync("ip", [
          "netns",
          "exec",
          ns,
          "ipset",
          "create",
          set,
          "hash:net",
          "family",
          family === "ipv4" ? "inet" : "inet6",
        ]);
      }
      run(family, "restore", [], live);
      run(family, "restore", ["--test", "--noflush"], fp.payload);
      run(family, "restore", ["--noflush"], fp.payload);
      const saved = run(family, "save", ["-t", "filter"]);
      after[family] = saved;
      // Rendered exactly as iptables-save prints it: not merely equal after normalising.
      const lines = new Set(saved.split("\n"));
      expect(fp.expected.filter((l) => !lines.has(l))).toEqual([]);
      expect(verifyApplied(saved, c.desired, c.ruleName, family)).toEqual([]);
    }
    const again = planAllowlist(after, c.desired, c.ruleName);
    expect(again.changes).toEqual([]);
    expect(again.inSync).toBe(true);
  });
});

describe("random allowlists round-trip through real iptables", () => {
  const ns = `dpacorefz${process.pid}`;
  beforeAll(() => execFileSync("ip", ["netns", "add", ns]));
  afterAll(() => execFileSync("ip", ["netns", "del", ns]));

  const v4 = fc
    .tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 32 }))
    .map(([n, p]) => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}/${p}`);
  const group = fc.oneof(
    fc.constant(0),
    fc.constant(0),
    fc.constant(0xffff),
    fc.integer({ min: 0, max: 0xffff }),
  );
  const v6 = fc
    .tuple(fc.array(group, { minLength: 8, maxLength: 8 }), fc.integer({ min: 0, max: 128 }))
    .map(([g, p]) => `${g.map((x) => x.toString(16)).join(":")}/${p}`);
  const args = fc.record({
    port: fc.oneof(
      fc.integer({ min: 1, max: 65535 }),
      fc
        .tuple(fc.integer({ min: 1, max: 65535 }), fc.integer({ min: 1, max: 65535 }))
        .map(([a, b]) => `${Math.min(a, b)}-${Math.max(a, b)}`),
    ),
    protocols: fc.subarray(["tcp", "udp"] as const, { minLength: 1 }),
    sources: fc.array(fc.oneof(v4, v6), { maxLength: 12 }),
    action: fc.constantFrom("DROP", "REJECT"),
    exemptDockerBridges: fc.boolean(),
    ruleName: fc.stringMatching(/^[A-Za-z0-9_-]{1,24}$/),
  });
  const base = { ipv4: loadCase("docker29").live.ipv4!, ipv6: loadCase("docker29").live.ipv6! };

  it("every rendered line comes back byte for byte, and planning again is empty", () => {
    let run = 0;
    fc.assert(
      fc.property(args, fc.constantFrom("nft", "legacy"), (a, backend) => {
        run++;
        // Every fourth run pins an original destination; its family then limits the sources.
        const dst = run % 4 === 0 ? (run % 8 === 0 ? "198.18.0.10" : "2001:db8::10") : undefined;
        const dstFamily = dst?.includes(":") ? "ipv6" : "ipv4";
        const input =
          dst === undefined
            ? a
            : {
                ...a,
                originalDestination: dst,
                sources: a.sources.filter((x) => x.includes(":") === (dstFamily === "ipv6")),
              };
        const v = validateAllowlist(input, "fuzz");
        if (!v.ok) throw new Error(JSON.stringify(v.failures));
        const plan = planAllowlist(base, v.spec, v.spec.ruleName);
        const after: { ipv4: string | null; ipv6: string | null } = { ...base };
        for (const family of ["ipv4", "ipv6"] as const) {
          const fp = plan.families[family];
          if (fp === undefined) continue; // not this allowlist's family
          const tool = (t: string) => ["netns", "exec", ns, `${BIN[family]}-${backend}-${t}`];
          execFileSync("ip", tool("restore"), { input: base[family] });
          execFileSync("ip", [...tool("restore"), "--noflush"], { input: fp.payload });
          const saved = execFileSync("ip", [...tool("save"), "-t", "filter"], { encoding: "utf8" });
          after[family] = saved;
          const lines = new Set(saved.split("\n"));
          expect([run, fp.expected.filter((l) => !lines.has(l))]).toEqual([run, []]);
        }
        expect(planAllowlist(after, v.spec, v.spec.ruleName).changes).toEqual([]);
      }),
      { numRuns: 40 },
    );
  });
});

describe("allowlists on a real Docker host, checked with real traffic", () => {
  let lab: Lab;
  let host: LabHost;

  beforeAll(async () => {
    lab = await startLab({ docker: 1, light: 0, clients: 2, ipv6: true });
    host = lab.hosts[0];
  });
  afterAll(async () => {
    await lab?.down();
  });

  async function read(): Promise<{ ipv4: string; ipv6: string }> {
    const v4 = await lab.hostExec(host, "iptables-save -t filter");
    const v6 = await lab.hostExec(host, "ip6tables-save -t filter");
    if (v4.code !== 0 || v6.code !== 0) throw new Error(`iptables-save failed: ${v4.stderr}${v6.stderr}`);
    return { ipv4: v4.stdout, ipv6: v6.stdout };
  }

  async function apply(plan: Plan): Promise<void> {
    expect(plan.blocked).toBe(false);
    for (const family of ["ipv4", "ipv6"] as const) {
      const fp = plan.families[family];
      if (fp === undefined) continue;
      // The payload goes inside single quotes; our renderer never emits one.
      expect(fp.payload).not.toContain("'");
      for (const flags of ["--test --noflush", "--noflush"]) {
        const r = await lab.hostExec(host, `printf '%s' '${fp.payload}' | ${BIN[family]}-restore ${flags}`);
        if (r.code !== 0)
          throw new Error(`${BIN[family]}-restore ${flags} failed: ${r.stderr}\n${fp.payload}`);
      }
    }
  }

  function spec(args: object, name: string): AllowlistSpec {
    const v = validateAllowlist(args, name);
    if (!v.ok) throw new Error(JSON.stringify(v.failures));
    return v.spec;
  }

  it("lets the allowed client in, keeps the other out, spares containers, and deletes cleanly", async () => {
    const [allowed, other] = lab.clients;
    const before = await read();
    // The probes can fail: before any allowlist, everyone gets in.
    expect(await lab.probe(other, host, 8080, "tcp")).toBe(true);
    expect(await lab.probe(other, host, 5353, "udp")).toBe(true);
    expect(await lab.probe(other, host, 8080, "tcp", 6)).toBe(true);

    const sources = [allowed.ipv4, allowed.ipv6!];
    const web = spec({ port: 8080, sources }, "web");
    const dns = spec({ port: 5353, protocols: ["udp"], sources, action: "REJECT" }, "dns");
    for (const s of [web, dns]) await apply(planAllowlist(await read(), s, s.ruleName));

    const now = await read();
    for (const s of [web, dns]) {
      const plan = planAllowlist(now, s, s.ruleName);
      expect(plan.changes).toEqual([]);
      expect(plan.inSync).toBe(true);
      for (const family of ["ipv4", "ipv6"] as const)
        expect(verifyApplied(now[family], s, s.ruleName, family)).toEqual([]);
    }

    for (const family of [4, 6] as const) {
      expect(await lab.probe(allowed, host, 8080, "tcp", family)).toBe(true);
      expect(await lab.probe(other, host, 8080, "tcp", family)).toBe(false);
      expect(await lab.probe(allowed, host, 5353, "udp", family)).toBe(true);
      expect(await lab.probe(other, host, 5353, "udp", family)).toBe(false);
    }
    // --ctorigdstport has no direction: the bridge exemption keeps containers' own outbound
    // connections to the same port numbers working.
    for (const family of [4, 6] as const) {
      expect(await lab.containerProbe(host, 8080, "tcp", family)).toBe(true);
      expect(await lab.containerProbe(host, 5353, "udp", family)).toBe(true);
    }

    for (const s of [web, dns]) await apply(planAllowlist(await read(), null, s.ruleName));
    const gone = await read();
    const section = (text: string, chain: string) =>
      text.split("\n").filter((l) => l.startsWith(`-A ${chain} `) || l.startsWith(`:${chain} `));
    for (const family of ["ipv4", "ipv6"] as const) {
      expect(section(gone[family], "DOCKER-USER")).toEqual(section(before[family], "DOCKER-USER"));
      expect(section(gone[family], "FORWARD")).toEqual(section(before[family], "FORWARD"));
      expect(section(gone[family], "INPUT")).toEqual(section(before[family], "INPUT"));
      expect(gone[family]).not.toContain("dpa:");
    }
    expect(await lab.probe(other, host, 8080, "tcp")).toBe(true);
    expect(await lab.probe(other, host, 8080, "tcp", 6)).toBe(true);
  });

  it("without the bridge exemption, containers lose their own outbound traffic to that port", async () => {
    // The counter-case of the exemption above: proves containerProbe can fail and why the
    // default is on.
    const bare = spec({ port: 8080, sources: [], exemptDockerBridges: false, ipv6: "off" }, "bare");
    await apply(planAllowlist(await read(), bare, bare.ruleName));
    try {
      expect(await lab.containerProbe(host, 8080, "tcp")).toBe(false);
      expect(await lab.containerProbe(host, 5353, "udp")).toBe(true);
    } finally {
      await apply(planAllowlist(await read(), null, bare.ruleName));
    }
    expect(await lab.containerProbe(host, 8080, "tcp")).toBe(true);
  });
});
