/**
 * The planner's choices the golden fixtures do not isolate: which paths of each family an
 * allowlist polices (ipv6 modes, hosts with and without Docker's IPv6 chains or ip6tables), the
 * docker-proxy jumps in INPUT and their placement above foreign rules.
 */
import { planAllowlist, renderInputJumps, validateAllowlist, type AllowlistSpec } from "../../provider/core";
import { loadCase } from "./support/fixtures";
import { applyPayload } from "./support/simulate";

const T = '-m comment --comment "dpa:web"';

function spec(args: object): AllowlistSpec {
  const v = validateAllowlist({ port: 8080, sources: ["198.18.1.0/24"], ...args }, "web");
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

describe("renderInputJumps", () => {
  test.each<[string, object, string[]]>([
    ["a port", {}, [`-A INPUT ! -i lo -p tcp -m tcp --dport 8080 ${T} -j DPA-web`]],
    [
      "a range, both protocols",
      { port: "8000-8100", protocols: ["udp", "tcp"] },
      [
        `-A INPUT ! -i lo -p tcp -m tcp --dport 8000:8100 ${T} -j DPA-web`,
        `-A INPUT ! -i lo -p udp -m udp --dport 8000:8100 ${T} -j DPA-web`,
      ],
    ],
    [
      "an IPv4 original destination, with its /32 (iptables-save prints -d with a mask)",
      { originalDestination: "198.18.0.10" },
      [`-A INPUT -d 198.18.0.10/32 ! -i lo -p tcp -m tcp --dport 8080 ${T} -j DPA-web`],
    ],
    [
      "an IPv6 original destination, with its /128",
      { originalDestination: "2001:db8::10", sources: ["2001:db8:1::/48"] },
      [`-A INPUT -d 2001:db8::10/128 ! -i lo -p tcp -m tcp --dport 8080 ${T} -j DPA-web`],
    ],
  ])("renders %s exactly as iptables-save prints it", (_name, args, lines) => {
    expect(renderInputJumps(spec(args))).toEqual(lines);
  });
});

describe("which paths an allowlist polices", () => {
  const docker20 = loadCase("docker20-fresh").live; // Docker's IPv6 chains present
  const v6Plain = loadCase("ipv6-input-only").live; // ip6tables works, no Docker chains
  const v4Only = { ipv4: docker20.ipv4, ipv6: null }; // no ip6tables at all

  const ipv6Lines = (plan: ReturnType<typeof planAllowlist>) =>
    plan.changes.filter((c) => c.startsWith("+ [ipv6] -A ")).map((c) => c.split(" ")[3]);
  const codes = (plan: ReturnType<typeof planAllowlist>) => plan.findings.map((f) => f.code);

  test.each<[string, { ipv4: string | null; ipv6: string | null }, string, string[], string[], boolean]>([
    ["auto, Docker's IPv6 chains", docker20, "auto", ["DOCKER-USER", "INPUT"], [], false],
    ["on, Docker's IPv6 chains", docker20, "on", ["DOCKER-USER", "INPUT"], [], false],
    ["auto, ip6tables without Docker chains: INPUT only", v6Plain, "auto", ["INPUT"], [], false],
    ["on, ip6tables without Docker chains: INPUT only", v6Plain, "on", ["INPUT"], [], false],
    ["auto, no ip6tables: nothing, silently", v4Only, "auto", [], [], false],
    ["on, no ip6tables: blocked", v4Only, "on", [], ["ipv6-unavailable"], true],
    ["off, Docker's IPv6 chains: a warning", docker20, "off", [], ["proxy-path-unpoliced"], false],
    ["off, ip6tables without Docker chains: a warning", v6Plain, "off", [], ["proxy-path-unpoliced"], false],
    ["off, no ip6tables: nothing to police, no finding", v4Only, "off", [], [], false],
  ])("ipv6 %s", (_name, live, ipv6, chains, findingCodes, blocked) => {
    const plan = planAllowlist(live, spec({ ipv6 }), "web");
    expect(plan.blocked).toBe(blocked);
    const jumpChains = [...new Set(ipv6Lines(plan))].filter((c) => c !== "DPA-web");
    expect(jumpChains).toEqual(chains);
    for (const code of findingCodes) expect(codes(plan)).toContain(code);
    if (!findingCodes.includes("proxy-path-unpoliced"))
      expect(codes(plan)).not.toContain("proxy-path-unpoliced");
  });

  test("an IPv4 original destination binds docker-proxy to that address: no IPv6 path, no warning", () => {
    const plan = planAllowlist(docker20, spec({ originalDestination: "198.18.0.10", ipv6: "off" }), "web");
    expect(plan.findings.map((f) => f.code)).not.toContain("proxy-path-unpoliced");
  });

  test("INPUT-only IPv6 has no conntrack cut (docker-proxy's flows are not DNATed) and keeps IPv4's", () => {
    const plan = planAllowlist(v6Plain, spec({}), "web");
    expect(plan.families.ipv6?.conntrack).toEqual([]);
    expect(plan.families.ipv4?.conntrack.length).toBeGreaterThan(0);
  });

  test("IPv4-only sources on the IPv6 path: the chain lets no IPv6 client in (fail closed)", () => {
    const plan = planAllowlist(v6Plain, spec({}), "web");
    const after = applyPayload(v6Plain.ipv6!, plan.families.ipv6!.payload, "ipv6");
    const chain = after.split("\n").filter((l) => l.startsWith("-A DPA-web "));
    expect(chain.filter((l) => l.includes(" -s "))).toEqual([]);
    expect(chain[chain.length - 1]).toBe(`-A DPA-web ${T} -j DROP`);
  });
});

describe("INPUT jumps sit above every foreign rule, below other allowlists' jumps", () => {
  const base = [
    "*filter",
    ":INPUT DROP [0:0]",
    ":FORWARD DROP [0:0]",
    ":DOCKER-USER - [0:0]",
    ":DPA-api - [0:0]",
    ":ufw-before-input - [0:0]",
    "-A FORWARD -j DOCKER-USER",
    '-A INPUT ! -i lo -p tcp -m tcp --dport 9000 -m comment --comment "dpa:api" -j DPA-api',
    "-A INPUT -j ufw-before-input",
    "-A INPUT -i lo -j ACCEPT",
    "COMMIT",
    "",
  ].join("\n");
  const input = (text: string) => text.split("\n").filter((l) => l.startsWith("-A INPUT "));

  test("a create inserts at the top; a delete gives INPUT back exactly", () => {
    const s = spec({ ipv6: "off" });
    const plan = planAllowlist({ ipv4: base, ipv6: null }, s, "web");
    const after = applyPayload(base, plan.families.ipv4!.payload, "ipv4");
    expect(input(after)[0]).toBe(`-A INPUT ! -i lo -p tcp -m tcp --dport 8080 ${T} -j DPA-web`);
    expect(input(after).slice(1)).toEqual(input(applyPayload(base, "*filter\nCOMMIT\n", "ipv4")));
    const gone = applyPayload(
      after,
      planAllowlist({ ipv4: after, ipv6: null }, null, "web").families.ipv4!.payload,
      "ipv4",
    );
    expect(input(gone)).toEqual(input(applyPayload(base, "*filter\nCOMMIT\n", "ipv4")));
  });

  test("below another allowlist's jump it is in place; below a foreign rule it is moved back up", () => {
    const s = spec({ ipv6: "off" });
    const ours = `! -i lo -p tcp -m tcp --dport 8080 ${T} -j DPA-web`;
    const placed = (at: number) =>
      applyPayload(base, `*filter\n:DPA-web - [0:0]\n-I INPUT ${at} ${ours}\nCOMMIT\n`, "ipv4");
    const inPlace = planAllowlist({ ipv4: placed(2), ipv6: null }, s, "web");
    expect(inPlace.changes.filter((c) => c.includes("INPUT"))).toEqual([]);
    const below = planAllowlist({ ipv4: placed(3), ipv6: null }, s, "web");
    expect(below.changes.filter((c) => c.includes("INPUT"))).toEqual([
      `~ [ipv4] -A INPUT ${ours} (moved to the top of INPUT)`,
    ]);
    expect(below.findings.map((f) => f.code)).toContain("foreign-rule-precedes-jump");
  });
});
