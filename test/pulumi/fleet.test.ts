import * as pulumi from "@pulumi/pulumi";
import * as fc from "fast-check";

import {
  DockerPortAllowlistFleet,
  FleetError,
  planRollout,
  samePorts,
  type DockerPortAllowlistFleetArgs,
  type RolloutArgs,
} from "../../provider/pulumi/fleet";
import { DOCKER_PORT_ALLOWLIST_TYPE } from "../../provider/pulumi/resource";
import { recordRegistrations, type Registered } from "./support/mocks";

const hosts = (n: number) => Array.from({ length: n }, (_, i) => `h${i + 1}`);

describe("planRollout", () => {
  it.each<[string, string[], RolloutArgs | undefined, string[][]]>([
    ["no rollout: everything at once", hosts(4), undefined, [["h1", "h2", "h3", "h4"]]],
    ["batches of two", hosts(5), { batchSize: 2 }, [["h1", "h2"], ["h3", "h4"], ["h5"]]],
    [
      "one canary by name, then pairs",
      hosts(5),
      { canaries: ["h3"], batchSize: 2 },
      [["h3"], ["h1", "h2"], ["h4", "h5"]],
    ],
    [
      "canaries keep host order",
      hosts(4),
      { canaries: ["h4", "h2"] },
      [
        ["h2", "h4"],
        ["h1", "h3"],
      ],
    ],
    [
      "the first two hosts as canaries",
      hosts(4),
      { canaries: 2, batchSize: 1 },
      [["h1", "h2"], ["h3"], ["h4"]],
    ],
    ["every host a canary", hosts(2), { canaries: 2 }, [["h1", "h2"]]],
    ["zero canaries", hosts(2), { canaries: 0 }, [["h1", "h2"]]],
    ["no hosts", [], { batchSize: 3 }, []],
  ])("plans %s", (_what, names, rollout, expected) => {
    expect(planRollout(names, rollout)).toEqual(expected);
  });

  it.each<[string, string[], RolloutArgs, string]>([
    [
      "duplicate host names",
      ["a", "b", "a"],
      {},
      'hosts[2].name "a" is already used by hosts[0]; every host needs a unique name. Rename one of them (names are used in resource names and in rollout.canaries).',
    ],
    [
      "an unknown canary",
      ["a", "b"],
      { canaries: ["c"] },
      'rollout.canaries[0] names "c", which is not a host of this fleet; known hosts: a, b. Use one of those names.',
    ],
    [
      "a canary listed twice",
      ["a", "b"],
      { canaries: ["a", "a"] },
      'rollout.canaries[1] lists "a" twice; list each canary host once.',
    ],
    [
      "too many canaries",
      ["a"],
      { canaries: 2 },
      'rollout.canaries is 2; as a number it means "the first N hosts" and must be a whole number from 0 to 1 (the number of hosts). Or list host names instead.',
    ],
    [
      "a fractional batch size",
      ["a"],
      { batchSize: 1.5 },
      "rollout.batchSize is 1.5; it must be a whole number of hosts, 1 or more. Leave it unset to change all non-canary hosts in one batch.",
    ],
  ])("refuses %s with a FleetError that says how to fix it", (_what, names, rollout, message) => {
    expect(() => planRollout(names, rollout)).toThrow(new FleetError(message));
  });

  // Arbitrary fleets: unique host names, canaries as a subset (by name) or a count, any batch size.
  const fleet = fc.uniqueArray(fc.stringMatching(/^[a-z][a-z0-9-]{0,8}$/), { maxLength: 40 }).chain((names) =>
    fc.record({
      names: fc.constant(names),
      canaries: fc.oneof(
        fc.constant(undefined),
        fc.integer({ min: 0, max: names.length }),
        fc.subarray(names).chain((s) => fc.shuffledSubarray(s, { minLength: s.length })),
      ),
      batchSize: fc.option(fc.integer({ min: 1, max: 12 }), { nil: undefined }),
    }),
  );

  const canaryNames = (names: string[], c: RolloutArgs["canaries"]): string[] =>
    c === undefined ? [] : typeof c === "number" ? names.slice(0, c) : names.filter((n) => c.includes(n));

  it("puts every host in exactly one batch and leaves no batch empty", () => {
    fc.assert(
      fc.property(fleet, ({ names, canaries, batchSize }) => {
        const batches = planRollout(names, { canaries, batchSize });
        const flat = batches.flat();
        expect([...flat].sort()).toEqual([...names].sort());
        expect(new Set(flat).size).toBe(flat.length);
        for (const b of batches) expect(b.length).toBeGreaterThan(0);
      }),
    );
  });

  it("runs the canaries first, alone, in host order", () => {
    fc.assert(
      fc.property(fleet, ({ names, canaries, batchSize }) => {
        const batches = planRollout(names, { canaries, batchSize });
        const expected = canaryNames(names, canaries);
        if (expected.length === 0) return;
        expect(batches[0]).toEqual(expected);
      }),
    );
  });

  it("respects the batch size: full batches, only the last may be smaller", () => {
    fc.assert(
      fc.property(fleet, ({ names, canaries, batchSize }) => {
        const batches = planRollout(names, { canaries, batchSize });
        const rest = canaryNames(names, canaries).length > 0 ? batches.slice(1) : batches;
        const size = batchSize ?? rest.flat().length;
        rest.forEach((b, i) => {
          if (i < rest.length - 1) expect(b.length).toBe(size);
          else expect(b.length).toBeLessThanOrEqual(size);
        });
      }),
    );
  });

  it("keeps the hosts' list order and gives the same answer every time", () => {
    fc.assert(
      fc.property(fleet, ({ names, canaries, batchSize }) => {
        const batches = planRollout(names, { canaries, batchSize });
        const canary = new Set(canaryNames(names, canaries));
        const rest = batches.flat().filter((h) => !canary.has(h));
        expect(rest).toEqual(names.filter((n) => !canary.has(n)));
        expect(planRollout([...names], { canaries, batchSize })).toEqual(batches);
      }),
    );
  });
});

describe("samePorts", () => {
  it.each<[string, (string[] | undefined)[], string[]]>([
    ["no allowlist on the host", [], []],
    [
      "one allowlist: its report",
      [["5353/udp ipv4 -> a", "9/tcp ipv4 -> b"]],
      ["5353/udp ipv4 -> a", "9/tcp ipv4 -> b"],
    ],
    [
      // web and dns applied in parallel: each read the other's port before it was policed.
      "each reports the other's port: neither is open",
      [["5353/udp ipv4 -> a"], ["8080/tcp ipv4 -> c"]],
      [],
    ],
    ["a report not known yet is left out", [undefined, ["9/tcp ipv4 -> b"]], ["9/tcp ipv4 -> b"]],
    [
      "in the first report's order",
      [
        ["2", "1", "3"],
        ["3", "2", "1"],
        ["1", "2"],
      ],
      ["2", "1"],
    ],
  ])("%s", (_name, lists, expected) => {
    expect(samePorts(lists)).toEqual(expected);
  });
});

describe("DockerPortAllowlistFleet", () => {
  // Mocks record what the fleet registers; ordering between batches is proven with the real engine
  // in test/engine/examples.test.ts (mocks do not see dependsOn).
  let registered: Registered[] = [];
  beforeAll(() => {
    registered = recordRegistrations();
  });

  const fleetArgs = (): DockerPortAllowlistFleetArgs => ({
    connection: { user: "deploy", privateKey: "KEY", hostKey: "SHA256:shared" },
    policies: [
      { name: "web", port: 8080, sources: ["198.18.1.0/24"] },
      { name: "dns", port: 5353, protocols: ["udp"], sources: ["198.18.2.2"] },
    ],
    hosts: [
      { name: "a", connection: { host: "198.18.0.10" } },
      { name: "b", connection: { host: "198.18.0.11", user: "root" }, extraSources: { web: ["198.18.9.9"] } },
      { name: "c", connection: { host: "198.18.0.12" }, policies: ["web"] },
    ],
    rollout: { canaries: ["b"], batchSize: 1 },
    persistence: { rulesV4Path: "/etc/sysconfig/iptables" },
  });

  it("makes one allowlist per host and policy with merged connection, extra sources and persistence", async () => {
    registered.length = 0;
    const fleet = new DockerPortAllowlistFleet("edge", fleetArgs());
    expect(fleet.batches).toEqual([["b"], ["a"], ["c"]]);
    expect(Object.fromEntries(Object.entries(fleet.allowlists).map(([h, p]) => [h, Object.keys(p)]))).toEqual(
      {
        b: ["web", "dns"],
        a: ["web", "dns"],
        c: ["web"],
      },
    );
    // Every allowlist's id resolves once the mocks have seen its registration: wait for those.
    const all = Object.values(fleet.allowlists).flatMap((byPolicy) => Object.values(byPolicy));
    await Promise.all(all.map((a) => new Promise((resolve) => a.id.apply(resolve))));
    const allowlists = registered.filter((r) => r.type === DOCKER_PORT_ALLOWLIST_TYPE);
    expect(allowlists.map((r) => r.name)).toEqual([
      "edge-b-web",
      "edge-b-dns",
      "edge-a-web",
      "edge-a-dns",
      "edge-c-web",
    ]);
    const bWeb = allowlists.find((r) => r.name === "edge-b-web")!.inputs;
    expect(bWeb).toMatchObject({
      ruleName: "web",
      port: 8080,
      sources: ["198.18.1.0/24", "198.18.9.9"],
      rulesV4Path: "/etc/sysconfig/iptables",
    });
    // The host's fields win over the fleet's. The key is a secret: mocks see the whole connection as
    // one (they lift nested secrets to the top); the engine keeps it to the key (test/engine/package.test.ts).
    expect(pulumi.runtime.isRpcSecret(bWeb.connection)).toBe(true);
    expect(pulumi.runtime.unwrapRpcSecret(bWeb.connection)).toEqual({
      host: "198.18.0.11",
      user: "root",
      privateKey: "KEY",
      hostKey: "SHA256:shared",
    });
    expect(allowlists.find((r) => r.name === "edge-a-dns")!.inputs).toMatchObject({
      ruleName: "dns",
      protocols: ["udp"],
      sources: ["198.18.2.2"],
      connection: { value: { host: "198.18.0.10", user: "deploy" } },
    });
    expect(registered.some((r) => r.type === "docker-port-allowlist:index:Fleet" && r.name === "edge")).toBe(
      true,
    );
  });

  it("takes Inputs at every level: a policy's sources, a host's extra sources, persistence, the jump host", async () => {
    registered.length = 0;
    const fleet = new DockerPortAllowlistFleet("io", {
      connection: { privateKey: pulumi.secret("KEY"), proxy: { host: pulumi.output("198.18.0.1") } },
      policies: [
        { name: "web", port: pulumi.output(8080), sources: [pulumi.output("198.18.1.7"), "198.18.1.0/24"] },
        {
          name: "dns",
          port: 5353,
          protocols: [pulumi.output("udp" as const)],
          sources: pulumi.output(["198.18.2.2"]),
        },
      ],
      hosts: [
        {
          name: "a",
          connection: { host: pulumi.output("198.18.0.10") },
          extraSources: { web: [pulumi.output("198.18.9.9")], dns: Promise.resolve(["198.18.9.8"]) },
        },
      ],
      persistence: { persist: pulumi.output(false) },
    });
    const all = Object.values(fleet.allowlists).flatMap((byPolicy) => Object.values(byPolicy));
    await Promise.all(all.map((a) => new Promise((resolve) => a.id.apply(resolve))));
    const inputs = (n: string) => registered.find((r) => r.name === n)!.inputs;
    expect(inputs("io-a-web")).toMatchObject({
      port: 8080,
      sources: ["198.18.1.7", "198.18.1.0/24", "198.18.9.9"],
      persist: false,
      connection: { value: { host: "198.18.0.10", privateKey: "KEY", proxy: { host: "198.18.0.1" } } },
    });
    expect(inputs("io-a-dns")).toMatchObject({ protocols: ["udp"], sources: ["198.18.2.2", "198.18.9.8"] });
  });

  it.each<[string, (a: DockerPortAllowlistFleetArgs) => DockerPortAllowlistFleetArgs, string]>([
    [
      "an unknown policy on a host",
      (a) => ({ ...a, hosts: [{ name: "a", connection: { host: "x" }, policies: ["ssh"] }] }),
      'hosts[0].policies[0] is "ssh", not a policy of this fleet; known policies: web, dns.',
    ],
    [
      "extra sources for a policy the host does not apply",
      (a) => ({
        ...a,
        hosts: [{ name: "a", connection: { host: "x" }, policies: ["dns"], extraSources: { web: [] } }],
      }),
      'hosts[0].extraSources.web adds sources to policy "web", which is not applied to host "a"; known policies: web, dns; this host applies: dns. Fix the name or apply the policy.',
    ],
    [
      "a policy name too long for a chain",
      (a) => ({ ...a, policies: [{ name: "x".repeat(25), port: 1, sources: [] }] }),
      `policies[0].name is "${"x".repeat(25)}"; a policy name becomes the chain DPA-<name> on every host, so it must be 1-24 letters, digits, \`_\` or \`-\`. Pick a shorter or simpler name.`,
    ],
    [
      "no policies",
      (a) => ({ ...a, policies: [] }),
      "policies is empty; a fleet needs at least one policy ({ name, port, sources }).",
    ],
  ])("refuses %s before creating anything", (_what, change, message) => {
    registered.length = 0;
    expect(() => new DockerPortAllowlistFleet("bad", change(fleetArgs()))).toThrow(new FleetError(message));
  });
});
