/**
 * Published ports and which of them no allowlist polices (provider/core/published.ts), against
 * the real captures: lab/layouts/docker20.* (Debian 12 docker.io 20.10.24) and docker29.* (Docker
 * 29.8.0), every table as the daemon made them, and the in-sync fixture (docker20 after a real
 * iptables-nft applied an allowlist).
 */
import { readFileSync } from "fs";
import { join } from "path";
import fc from "fast-check";
import {
  planAllowlist,
  publishedPorts,
  publishedPortsNft,
  unpolicedFindings,
  unpolicedPorts,
  unpolicedPortText,
  validateAllowlist,
  type Family,
  type PublishedState,
} from "../../provider/core";
import { uncovered } from "../../provider/core/published";
import { TABLE, loadCase } from "./support/fixtures";
import { applyPayload } from "./support/simulate";

const LAYOUTS = join(__dirname, "..", "..", "lab", "layouts");
const NFT = join(__dirname, "fixtures", "docker29-nftables");
const nftCapture = (n: 4 | 6) => readFileSync(join(NFT, `nft-nat.v${n}.txt`), "utf8");
const layout = (name: string, n: 4 | 6) => readFileSync(join(LAYOUTS, `${name}.v${n}.rules`), "utf8");

/** A host whose every table is the capture `name` (filter and nat from the same save). */
function captured(name: string): PublishedState {
  const v4 = layout(name, 4);
  const v6 = layout(name, 6);
  return { filter: { ipv4: v4, ipv6: v6 }, nat: { ipv4: v4, ipv6: v6 } };
}

/** `state` after an allowlist's plan is applied (the simulated iptables-restore of the tests). */
function withAllowlist(state: PublishedState, name: string, args: Record<string, unknown>): PublishedState {
  const v = validateAllowlist(args, name);
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  const plan = planAllowlist(state.filter, v.spec, v.spec.ruleName);
  const apply = (f: Family) => {
    const text = state.filter[f];
    const p = plan.families[f];
    return text === null || p === undefined ? text : applyPayload(text, p.payload, f);
  };
  return { ...state, filter: { ipv4: apply("ipv4"), ipv6: apply("ipv6") } };
}

const texts = (s: PublishedState) => unpolicedPorts(s).map(unpolicedPortText);

describe("publishedPorts", () => {
  it.each([
    [
      "docker20",
      4,
      [
        { protocol: "tcp", ports: { from: 8080, to: 8080 }, container: "172.17.0.2:80" },
        { protocol: "udp", ports: { from: 5353, to: 5353 }, container: "172.17.0.3:53" },
      ],
    ],
    [
      "docker20",
      6,
      [
        { protocol: "tcp", ports: { from: 8080, to: 8080 }, container: "[2001:db8:1000::242:ac11:2]:80" },
        { protocol: "udp", ports: { from: 5353, to: 5353 }, container: "[2001:db8:1000::242:ac11:3]:53" },
      ],
    ],
    [
      "docker29",
      4,
      [
        { protocol: "tcp", ports: { from: 8080, to: 8080 }, container: "172.17.0.2:80" },
        { protocol: "udp", ports: { from: 5353, to: 5353 }, container: "172.17.0.3:53" },
      ],
    ],
    [
      // Docker 29 adds `! -s fe80::/10` to its IPv6 DNAT rules.
      "docker29",
      6,
      [
        { protocol: "tcp", ports: { from: 8080, to: 8080 }, container: "[2001:db8:1000::2]:80" },
        { protocol: "udp", ports: { from: 5353, to: 5353 }, container: "[2001:db8:1000::3]:53" },
      ],
    ],
  ] as const)("reads the DNAT rules of the real %s capture (v%d)", (name, n, expected) => {
    const family: Family = n === 4 ? "ipv4" : "ipv6";
    expect(publishedPorts(layout(name, n), family)).toEqual(expected.map((e) => ({ family, ...e })));
  });

  const NAT = (rules: string[]) => ["*nat", ":DOCKER - [0:0]", ...rules, "COMMIT", ""].join("\n");

  it("reads a host address, a range, and leaves out loopback, non-DNAT and non-DOCKER rules", () => {
    const nat = NAT([
      "-A DOCKER -i docker0 -j RETURN",
      "-A DOCKER -d 198.18.0.10/32 ! -i docker0 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 172.17.0.4:443",
      "-A DOCKER -d 127.0.0.1/32 ! -i docker0 -p tcp -m tcp --dport 9000 -j DNAT --to-destination 172.17.0.5:9000",
      "-A DOCKER ! -i docker0 -p udp -m udp --dport 6000:6010 -j DNAT --to-destination 172.17.0.6:6000-6010",
      "-A DOCKER ! -i docker0 -p sctp -m sctp --dport 7000 -j DNAT --to-destination 172.17.0.7:7000",
      "-A PREROUTING -p tcp -m tcp --dport 1 -j DNAT --to-destination 172.17.0.8:1",
    ]);
    expect(publishedPorts(nat, "ipv4")).toEqual([
      {
        family: "ipv4",
        protocol: "tcp",
        ports: { from: 8443, to: 8443 },
        hostAddress: "198.18.0.10",
        container: "172.17.0.4:443",
      },
      { family: "ipv4", protocol: "udp", ports: { from: 6000, to: 6010 }, container: "172.17.0.6:6000-6010" },
    ]);
    expect(
      publishedPorts(
        NAT(["-A DOCKER -d ::1/128 -p tcp -m tcp --dport 1 -j DNAT --to-destination [::2]:1"]),
        "ipv6",
      ),
    ).toEqual([]);
  });

  it("reads nothing from a filter table alone", () => {
    expect(publishedPorts(TABLE([]), "ipv4")).toEqual([]);
  });
});

describe("publishedPortsNft", () => {
  it("reads the DNAT rules of the real Docker 29 nftables capture, without the loopback one", () => {
    expect(publishedPortsNft(nftCapture(4), "ipv4")).toEqual([
      { family: "ipv4", protocol: "tcp", ports: { from: 8080, to: 8080 }, container: "172.17.0.2:80" },
      { family: "ipv4", protocol: "udp", ports: { from: 5353, to: 5353 }, container: "172.17.0.3:53" },
      {
        family: "ipv4",
        protocol: "tcp",
        ports: { from: 9443, to: 9443 },
        hostAddress: "198.18.0.10",
        container: "172.17.0.4:80",
      },
    ]);
    // `ip6 saddr != fe80::/10` is no host address.
    expect(publishedPortsNft(nftCapture(6), "ipv6")).toEqual([
      {
        family: "ipv6",
        protocol: "tcp",
        ports: { from: 8080, to: 8080 },
        container: "[2001:db8:1000::2]:80",
      },
      {
        family: "ipv6",
        protocol: "udp",
        ports: { from: 5353, to: 5353 },
        container: "[2001:db8:1000::3]:53",
      },
    ]);
  });

  it("reads a range and skips rules without a dnat", () => {
    const text = [
      'iifname != "docker0" tcp dport 8000-8010 counter packets 0 bytes 0 dnat to 172.17.0.2:8000-8010 comment "DNAT"',
      "ip daddr != 127.0.0.0/8 fib daddr type local counter packets 0 bytes 0 jump nat-prerouting-and-output",
    ].join("\n");
    expect(publishedPortsNft(text, "ipv4")).toEqual([
      { family: "ipv4", protocol: "tcp", ports: { from: 8000, to: 8010 }, container: "172.17.0.2:8000-8010" },
    ]);
  });

  it("counts them as unpoliced: Docker's nftables backend has no DOCKER-USER", () => {
    const bare = (family: Family) =>
      `# Generated by ${family === "ipv4" ? "iptables" : "ip6tables"}-save v1.8.9 (nf_tables)\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n`;
    const state: PublishedState = {
      filter: { ipv4: bare("ipv4"), ipv6: bare("ipv6") },
      nat: { ipv4: "*nat\nCOMMIT\n", ipv6: "*nat\nCOMMIT\n" },
      nft: { ipv4: nftCapture(4), ipv6: nftCapture(6) },
    };
    expect(texts(state)).toEqual([
      "8080/tcp ipv4 -> 172.17.0.2:80",
      "5353/udp ipv4 -> 172.17.0.3:53",
      "9443/tcp ipv4 on 198.18.0.10 -> 172.17.0.4:80",
      "8080/tcp ipv6 -> [2001:db8:1000::2]:80",
      "5353/udp ipv6 -> [2001:db8:1000::3]:53",
    ]);
  });
});

describe("unpolicedPorts", () => {
  it.each(["docker20", "docker29"])(
    "reports every port of the real %s capture while no allowlist exists, in both families",
    (name) => {
      const v6 = name === "docker20" ? "2001:db8:1000::242:ac11:" : "2001:db8:1000::";
      expect(texts(captured(name))).toEqual([
        "8080/tcp ipv4 -> 172.17.0.2:80",
        "5353/udp ipv4 -> 172.17.0.3:53",
        `8080/tcp ipv6 -> [${v6}2]:80`,
        `5353/udp ipv6 -> [${v6}3]:53`,
      ]);
    },
  );

  it.each(["docker20", "docker29"])("names exactly the port no allowlist covers on %s", (name) => {
    const state = withAllowlist(captured(name), "web", {
      port: 8080,
      sources: ["198.18.1.0/24", "2001:db8:5::/48"],
    });
    const v6 = name === "docker20" ? "2001:db8:1000::242:ac11:" : "2001:db8:1000::";
    expect(texts(state)).toEqual(["5353/udp ipv4 -> 172.17.0.3:53", `5353/udp ipv6 -> [${v6}3]:53`]);
    const both = withAllowlist(state, "dns", { port: 5353, protocols: ["udp"], sources: ["198.18.1.0/24"] });
    expect(texts(both)).toEqual([]);
  });

  it("counts the allowlist a real iptables-nft applied (the in-sync fixture)", () => {
    const c = loadCase("in-sync"); // web: 8080 tcp and udp, both families
    const nat = { ipv4: layout("docker20", 4), ipv6: layout("docker20", 6) };
    expect(texts({ filter: c.live, nat })).toEqual([
      "5353/udp ipv4 -> 172.17.0.3:53",
      "5353/udp ipv6 -> [2001:db8:1000::242:ac11:3]:53",
    ]);
  });

  it("reports docker-proxy's IPv6 path of IPv4-only containers unless INPUT polices it", () => {
    // Containers IPv4-only: ip6tables works, but its nat table has no DNAT.
    const v4 = layout("docker29", 4);
    const bare: PublishedState = { filter: { ipv4: v4, ipv6: TABLE([], []) }, nat: { ipv4: v4, ipv6: null } };
    expect(texts(bare)).toEqual([
      "8080/tcp ipv4 -> 172.17.0.2:80",
      "5353/udp ipv4 -> 172.17.0.3:53",
      "8080/tcp ipv6 (docker-proxy) -> 172.17.0.2:80",
      "5353/udp ipv6 (docker-proxy) -> 172.17.0.3:53",
    ]);
    // ipv6 "auto" polices that path through INPUT; "off" leaves it open.
    expect(texts(withAllowlist(bare, "web", { port: 8080, sources: ["198.18.1.0/24"] }))).toEqual([
      "5353/udp ipv4 -> 172.17.0.3:53",
      "5353/udp ipv6 (docker-proxy) -> 172.17.0.3:53",
    ]);
    expect(
      texts(withAllowlist(bare, "web", { port: 8080, sources: ["198.18.1.0/24"], ipv6: "off" })),
    ).toEqual([
      "5353/udp ipv4 -> 172.17.0.3:53",
      "8080/tcp ipv6 (docker-proxy) -> 172.17.0.2:80",
      "5353/udp ipv6 (docker-proxy) -> 172.17.0.3:53",
    ]);
    // No ip6tables at all: no IPv6 path this tool can see or police.
    expect(texts({ ...bare, filter: { ...bare.filter, ipv6: null } })).toEqual([
      "8080/tcp ipv4 -> 172.17.0.2:80",
      "5353/udp ipv4 -> 172.17.0.3:53",
    ]);
  });

  it("matches the original destination: an allowlist for one address covers only ports published there", () => {
    const nat = [
      "*nat",
      ":DOCKER - [0:0]",
      "-A DOCKER -d 198.18.0.10/32 ! -i docker0 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 172.17.0.4:443",
      "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80",
      "COMMIT",
      "",
    ].join("\n");
    const base: PublishedState = {
      filter: { ipv4: layout("docker29", 4), ipv6: null },
      nat: { ipv4: nat, ipv6: null },
    };
    const on = (port: number) => ({ port, sources: ["198.18.1.0/24"], originalDestination: "198.18.0.10" });
    expect(texts(withAllowlist(withAllowlist(base, "tls", on(8443)), "web", on(8080)))).toEqual([
      "8080/tcp ipv4 -> 172.17.0.2:80",
    ]);
    expect(texts(withAllowlist(base, "tls", { ...on(8443), originalDestination: "198.18.0.11" }))).toEqual([
      "8443/tcp ipv4 on 198.18.0.10 -> 172.17.0.4:443",
      "8080/tcp ipv4 -> 172.17.0.2:80",
    ]);
  });

  it("reports the part of a published range no allowlist covers", () => {
    const nat = [
      "*nat",
      ":DOCKER - [0:0]",
      "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8000:8010 -j DNAT --to-destination 172.17.0.2:8000-8010",
      "COMMIT",
      "",
    ].join("\n");
    const base: PublishedState = {
      filter: { ipv4: layout("docker29", 4), ipv6: null },
      nat: { ipv4: nat, ipv6: null },
    };
    expect(texts(withAllowlist(base, "mid", { port: "8003-8005", sources: [] }))).toEqual([
      "8000-8002/tcp ipv4 -> 172.17.0.2:8000-8010",
      "8006-8010/tcp ipv4 -> 172.17.0.2:8000-8010",
    ]);
  });

  it("counts nothing in DOCKER-USER when FORWARD never jumps there (fail-open)", () => {
    const state = withAllowlist(captured("docker29"), "web", { port: 8080, sources: [] });
    const v4 = state.filter.ipv4!.replace(/^-A FORWARD -j DOCKER-USER\n/m, "");
    expect(texts({ ...state, filter: { ...state.filter, ipv4: v4 } })[0]).toBe(
      "8080/tcp ipv4 -> 172.17.0.2:80",
    );
  });

  it("does not count a jump limited to some sources, nor a foreign rule", () => {
    const jumps = [
      "-A DOCKER-USER -s 198.18.1.0/24 -p tcp -m conntrack --ctorigdstport 8080 -j DPA-web",
      "-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 8080 -j DROP",
    ];
    const filter = TABLE(
      ["-A FORWARD -j DOCKER-USER", ...jumps],
      [":DOCKER-USER - [0:0]", ":DPA-web - [0:0]"],
    );
    const nat = layout("docker29", 4);
    expect(texts({ filter: { ipv4: filter, ipv6: null }, nat: { ipv4: nat, ipv6: null } })).toContain(
      "8080/tcp ipv4 -> 172.17.0.2:80",
    );
  });
});

describe("unpolicedPorts, as allowlists are added (property)", () => {
  // Published: 8080/tcp, 5353/udp (the captures) and a range, on every address and on one.
  const NAT4 = [
    "*nat",
    ":DOCKER - [0:0]",
    "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80",
    "-A DOCKER ! -i docker0 -p udp -m udp --dport 5353 -j DNAT --to-destination 172.17.0.3:53",
    "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8000:8010 -j DNAT --to-destination 172.17.0.4:8000-8010",
    "-A DOCKER -d 198.18.0.10/32 ! -i docker0 -p udp -m udp --dport 8005 -j DNAT --to-destination 172.17.0.5:53",
    "COMMIT",
    "",
  ].join("\n");
  const argsArb = fc.record({
    port: fc.oneof(
      fc.constantFrom(8080, 5353, 8005),
      fc
        .tuple(fc.integer({ min: 7990, max: 8012 }), fc.integer({ min: 0, max: 12 }))
        .map(([a, d]) => `${a}-${a + d}`),
    ),
    protocols: fc.subarray(["tcp", "udp"], { minLength: 1 }),
    sources: fc.constant(["198.18.1.0/24"]),
    ipv6: fc.constantFrom("auto", "off"),
    originalDestination: fc.option(fc.constantFrom("198.18.0.10", "198.18.0.11"), { nil: undefined }),
  });
  /** Every (family, path, protocol, single port, host address) left open. */
  const openSet = (s: PublishedState) =>
    new Set(
      unpolicedPorts(s).flatMap((p) =>
        Array.from(
          { length: p.ports.to - p.ports.from + 1 },
          (_, i) => `${p.family} ${p.path} ${p.protocol} ${p.ports.from + i} ${p.hostAddress ?? "*"}`,
        ),
      ),
    );

  it("an allowlist never opens a port, and leaves none of its own open over IPv4 where it polices", () => {
    fc.assert(
      fc.property(fc.array(argsArb, { minLength: 1, maxLength: 3 }), (list) => {
        let state: PublishedState = {
          filter: { ipv4: layout("docker29", 4), ipv6: TABLE([], []) },
          nat: { ipv4: NAT4, ipv6: null },
        };
        list.forEach((raw, i) => {
          const args = Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined));
          const before = openSet(state);
          state = withAllowlist(state, `a${i}`, args);
          const after = openSet(state);
          for (const port of after) expect(before).toContain(port);
          const [from, to = from] = String(args.port).split("-").map(Number) as [number, number?];
          for (const protocol of args.protocols as string[]) {
            for (let port = from; port <= to; port++) {
              // Limited to one original destination: only ports published there are covered.
              if (args.originalDestination === undefined) {
                expect(after).not.toContain(`ipv4 dnat ${protocol} ${port} *`);
              }
              expect(after).not.toContain(
                `ipv4 dnat ${protocol} ${port} ${args.originalDestination ?? "198.18.0.10"}`,
              );
            }
          }
        });
      }),
      { numRuns: 60 },
    );
  });
});

describe("uncovered", () => {
  it("is exactly the ports of the range no covering range holds, in order (port by port)", () => {
    const range = fc.tuple(fc.integer({ min: 1, max: 60 }), fc.integer({ min: 0, max: 20 }));
    fc.assert(
      fc.property(range, fc.array(range, { maxLength: 6 }), ([from, len], cs) => {
        const target = { from, to: from + len };
        const covered = cs.map(([f, l]) => ({ from: f, to: f + l }));
        const expected: number[] = [];
        for (let p = target.from; p <= target.to; p++) {
          if (!covered.some((c) => c.from <= p && p <= c.to)) expected.push(p);
        }
        const got = uncovered(target, covered);
        const ports = got.flatMap((r) => Array.from({ length: r.to - r.from + 1 }, (_, i) => r.from + i));
        expect(ports).toEqual(expected);
        // Maximal ranges: two in a row never touch.
        for (let i = 1; i < got.length; i++) expect(got[i]!.from).toBeGreaterThan(got[i - 1]!.to + 1);
      }),
    );
  });
});

describe("unpolicedFindings", () => {
  it("warns once per family, naming the ports and the fix; nothing when all are policed", () => {
    const f = unpolicedFindings(unpolicedPorts(captured("docker20")));
    expect(f.map((x) => [x.code, x.severity, x.family])).toEqual([
      ["published-port-unpoliced", "warning", "ipv4"],
      ["published-port-unpoliced", "warning", "ipv6"],
    ]);
    expect(f[0]!.message).toBe(
      "Docker publishes 2 ports on this host that no allowlist polices in ipv4, so everyone who reaches the host reaches them: 8080/tcp ipv4 -> 172.17.0.2:80, 5353/udp ipv4 -> 172.17.0.3:53. Fix: add an allowlist for each (port and protocol as shown), or unpublish them (or publish on 127.0.0.1 only).",
    );
    expect(unpolicedFindings([])).toEqual([]);
  });
});
