import { parseStackConfig } from "../../program/config";
import {
  demoStackConfig,
  expectedReach,
  renderMatrix,
  unpolicedMismatches,
  type ReachCell,
} from "../../scripts/demo";

// A lab as the demo sees it: only addresses and host keys matter here.
const fakeLab = {
  hosts: [10, 11, 12].map((n, i) => ({
    name: `h${i}`,
    ipv4: `198.18.5.${n}`,
    hostKeyFingerprint: `SHA256:${"A".repeat(42)}${i}`,
  })),
  clients: [200, 201, 202].map((n, i) => ({ name: `c${i}`, netns: `x-c${i}`, ipv4: `198.18.5.${n}` })),
} as unknown as Parameters<typeof demoStackConfig>[0];

describe("the demo's embedded policy", () => {
  const config = demoStackConfig(fakeLab);

  it("is a valid stack config for the root program once the key is set", () => {
    const withKey = { ...config, connection: { ...(config.connection as object), privateKey: "k" } };
    const result = parseStackConfig(withKey);
    if (!result.ok) throw new Error(JSON.stringify(result.issues, null, 2));
    expect(result.fleet.hosts.map((h) => h.name)).toEqual(["docker-1", "docker-2", "docker-3"]);
    expect(result.fleet.rollout).toEqual({ canaries: ["docker-1"], batchSize: 1 });
  });

  // What the demo promises, written out by hand (not derived from the config).
  it.each<[string, string, number, "tcp" | "udp", string | undefined, boolean]>([
    ["docker-1", "198.18.5.200", 8080, "tcp", "web", true],
    ["docker-2", "198.18.5.200", 8080, "tcp", "web", true],
    ["docker-1", "198.18.5.201", 8080, "tcp", "web", false],
    ["docker-1", "198.18.5.202", 8080, "tcp", "web", false],
    ["docker-3", "198.18.5.202", 8080, "tcp", "web", true], // the per-host override
    ["docker-1", "198.18.5.201", 5353, "udp", "dns", true],
    ["docker-2", "198.18.5.200", 5353, "udp", "dns", false],
    ["docker-3", "198.18.5.200", 5353, "udp", undefined, true], // docker-3 applies only web
    ["docker-1", "198.18.5.201", 8080, "udp", undefined, true], // web is tcp only
    ["docker-1", "198.18.5.201", 9000, "tcp", undefined, true], // not policed at all
  ])("on %s, %s to %i/%s: policy %s, allowed %s", (host, client, port, proto, policy, allowed) => {
    expect(expectedReach(config as never, host, client, port, proto)).toEqual({ policy, allowed });
  });
});

describe("expectedReach", () => {
  const config = {
    hosts: [{ name: "a" }],
    policies: [
      {
        name: "range",
        port: "8000-8100",
        protocols: ["tcp", "udp"],
        sources: ["198.18.0.0/24", "2001:db8::/64"],
      },
    ],
  };
  it.each<[string, number, boolean]>([
    ["198.18.0.77", 8000, true],
    ["198.18.0.77", 8100, true],
    ["198.18.1.77", 8050, false],
    ["2001:db8::5", 8050, true],
    ["2001:db8:1::5", 8050, false],
    ["198.18.1.77", 8101, true],
  ])("matches %s on port %i by CIDR and range: %s", (client, port, allowed) => {
    expect(expectedReach(config, "a", client, port, "udp").allowed).toBe(allowed);
  });

  it("refuses a host the config does not have", () => {
    expect(() => expectedReach(config, "b", "198.18.0.1", 80, "tcp")).toThrow("no host b in the config");
  });
});

describe("renderMatrix", () => {
  it("shows policy and measurement side by side and marks a mismatch", () => {
    const cell = (client: string, host: string, expected: boolean, measured: boolean): ReachCell => ({
      client,
      host,
      policy: "web",
      port: 8080,
      proto: "tcp",
      expected,
      measured,
    });
    const lines = renderMatrix(
      [
        cell("c1", "h1", true, true),
        cell("c1", "h2", false, true),
        cell("c2", "h1", false, false),
        cell("c2", "h2", true, true),
      ],
      { c1: "198.18.0.200", c2: "198.18.0.201" },
    );
    expect(lines.map((l) => l.trimEnd())).toEqual([
      "                              8080/tcp (policy web)",
      "client                        h1           h2",
      "c1 198.18.0.200               allow/open   deny/open!!",
      "c2 198.18.0.201               deny/shut    allow/open",
    ]);
  });

  it("adds the unpolicedPorts output as a last row: UNPOLICED where it lists the port in IPv4", () => {
    const cells: ReachCell[] = ["h1", "h2"].map((host) => ({
      client: "c1",
      host,
      policy: host === "h1" ? "dns" : "-",
      port: 5353,
      proto: "udp",
      expected: true,
      measured: true,
    }));
    const unpoliced = {
      h1: ["5353/udp ipv6 (docker-proxy) -> 172.17.0.3:53"],
      h2: ["5353/udp ipv4 -> 172.17.0.3:53"],
    };
    expect(renderMatrix(cells, { c1: "198.18.0.200" }, unpoliced).map((l) => l.trimEnd())).toEqual([
      "                              5353/udp (policy dns)",
      "client                        h1           h2",
      "c1 198.18.0.200               allow/open   allow/open",
      "unpolicedPorts (output)       policed      UNPOLICED",
    ]);
    expect(unpolicedMismatches(cells, unpoliced)).toEqual([]);
    expect(unpolicedMismatches(cells, { h1: ["5353/udp ipv4 -> 172.17.0.3:53"], h2: [] })).toEqual([
      "unpolicedPorts of h1 lists 5353/udp ipv4, which policy dns polices",
      "unpolicedPorts of h2 does not list 5353/udp ipv4, which no policy polices",
    ]);
  });
});
