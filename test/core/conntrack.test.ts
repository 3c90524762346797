/**
 * The conntrack cut policy (provider/core/conntrack.ts): read back from a state
 * (`conntrackPolicy`, hostile text included) and computed from a spec (`conntrackPolicyOf`,
 * what the plan carries). test/core/plan.property.test.ts holds the two against each other.
 */
import {
  allowedSources,
  conntrackPolicy,
  conntrackPolicyOf,
  validateAllowlist,
  type AllowlistSpec,
  type Family,
} from "../../provider/core";

import { WEB_STATE as before, WEB_TAG as T } from "./support/fixtures";

describe("conntrackPolicy", () => {
  test("lists the policed ports and the sources the chain lets in after the change", () => {
    const after = before.replace(`-A DPA-web -s 198.18.2.7/32 ${T} -j RETURN\n`, "");
    expect(allowedSources(after, "web")).toEqual(["198.18.1.0/24"]);
    expect(conntrackPolicy(after, "web", "ipv4")).toEqual(["P ipv4 tcp 8080 8080 -", "A ipv4 198.18.1.0/24"]);
  });

  test("a deleted allowlist (no chain, no jump) lets everyone in, so nothing is cut", () => {
    const deleted = before
      .split("\n")
      .filter((l) => !l.includes("DPA-web"))
      .join("\n");
    expect(conntrackPolicy(deleted, "web", "ipv4")).toEqual([]);
  });

  test("an allow-all source (rendered without -s) cuts nothing; the bridge exemption asks for bridge subnets", () => {
    const open = before.replace(`-A DPA-web ${T} -j DROP`, `-A DPA-web ${T} -j RETURN`);
    expect(conntrackPolicy(open, "web", "ipv4")).toEqual([]);
    const bridged = before
      .replace(
        `-A DPA-web -s 198.18.1.0/24`,
        `-A DPA-web -i docker0 ${T} -j RETURN\n-A DPA-web -s 198.18.1.0/24`,
      )
      .replace(`--ctorigdstport 8080 ${T}`, `--ctorigdst 198.18.0.10/32 --ctorigdstport 8000:8100 ${T}`);
    expect(conntrackPolicy(bridged, "web", "ipv4")).toEqual([
      "P ipv4 tcp 8000 8100 198.18.0.10",
      "A ipv4 198.18.1.0/24",
      "A ipv4 198.18.2.7/32",
      "B ipv4 docker0",
    ]);
  });

  test("never emits a token outside the safe set, even from a hostile save text", () => {
    const hostile = before.replace("198.18.2.7/32", "$(reboot)");
    expect(conntrackPolicy(hostile, "web", "ipv4")).toEqual([
      "P ipv4 tcp 8080 8080 -",
      "A ipv4 198.18.1.0/24",
    ]);
  });
});

function spec(args: object): AllowlistSpec {
  const v = validateAllowlist({ ruleName: "web", ...args }, "web");
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

describe("conntrackPolicyOf (from the spec, carried in the plan)", () => {
  /** Docker's bridges on the host, as the planner reads them (`dockerBridges`). */
  const BRIDGES = ["br-1a2b3c4d5e6f", "docker0"];

  test("names no bridge outside the safe set (the host's shell word-splits the lines)", () => {
    const s = spec({ port: 80, sources: ["198.18.1.0/24"] });
    expect(conntrackPolicyOf(s, "ipv4", ["docker0", "$(reboot)", "br x"])).toEqual([
      "P ipv4 tcp 80 80 -",
      "A ipv4 198.18.1.0/24",
      "B ipv4 docker0",
    ]);
  });

  test.each<[string, object | null, Family, string[]]>([
    [
      "one port, sources sorted, no bridge exemption",
      { port: 8080, sources: ["198.18.2.7", "198.18.1.0/24"], exemptDockerBridges: false },
      "ipv4",
      ["P ipv4 tcp 8080 8080 -", "A ipv4 198.18.1.0/24", "A ipv4 198.18.2.7/32"],
    ],
    [
      "a range, both protocols, an original destination and the bridge exemption",
      {
        port: "8000-8100",
        protocols: ["udp", "tcp"],
        sources: ["198.18.1.0/24"],
        originalDestination: "198.18.0.10",
      },
      "ipv4",
      [
        "P ipv4 tcp 8000 8100 198.18.0.10",
        "P ipv4 udp 8000 8100 198.18.0.10",
        "A ipv4 198.18.1.0/24",
        "B ipv4 br-1a2b3c4d5e6f",
        "B ipv4 docker0",
      ],
    ],
    [
      "IPv6 sources and original destination, compressed as ip6tables prints them",
      {
        port: 443,
        sources: ["2001:0db8:0:2::/64", "2001:db8::7"],
        originalDestination: "2001:db8:0:0::10",
        exemptDockerBridges: false,
      },
      "ipv6",
      ["P ipv6 tcp 443 443 2001:db8::10", "A ipv6 2001:db8::7/128", "A ipv6 2001:db8:0:2::/64"],
    ],
    [
      "a family the original destination excludes",
      { port: 443, sources: ["198.18.1.0/24"], originalDestination: "198.18.0.10" },
      "ipv6",
      [],
    ],
    ["ipv6 off", { port: 443, sources: ["2001:db8::/32"], ipv6: "off" }, "ipv6", []],
    [
      "an allow-all source, which lets everyone in",
      { port: 80, sources: ["0.0.0.0/0", "198.18.1.0/24"] },
      "ipv4",
      [],
    ],
    [
      "no source of this family: every flow to the port is cut",
      { port: 80, sources: ["2001:db8::/32"], exemptDockerBridges: false },
      "ipv4",
      ["P ipv4 tcp 80 80 -"],
    ],
    ["a delete", null, "ipv4", []],
  ])("%s", (_name, args, family, expected) => {
    expect(conntrackPolicyOf(args === null ? null : spec(args), family, BRIDGES)).toEqual(expected);
  });
});
