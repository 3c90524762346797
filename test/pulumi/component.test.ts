import {
  Allowlist,
  AllowlistFleet,
  Protocol,
  toAllowlistArgs,
  toFleetArgs,
  type AllowlistArgs,
  type AllowlistFleetArgs,
} from "../../provider/pulumi/component";
import { FleetError } from "../../provider/pulumi/fleet";
import { DOCKER_PORT_ALLOWLIST_TYPE } from "../../provider/pulumi/resource";
import { recordRegistrations, type Registered } from "./support/mocks";

const connection = { host: "198.18.0.10", privateKey: "KEY", hostKey: "SHA256:k" };

describe("toAllowlistArgs", () => {
  it.each<[string, Partial<AllowlistArgs>, number | string | undefined]>([
    ["one port", { port: 8080 }, 8080],
    ["a range", { portRange: "8000-8100" }, "8000-8100"],
    ["neither: left to the allowlist's own validation, which names `port`", {}, undefined],
  ])("takes %s as the TypeScript API's port", (_what, port, expected) => {
    const args = toAllowlistArgs({ connection, sources: ["198.18.1.0/24"], ...port });
    expect(args.port).toEqual(expected);
    expect(args).not.toHaveProperty("portRange");
    expect(args).toMatchObject({ connection, sources: ["198.18.1.0/24"] });
  });

  it("refuses port and portRange together, naming both and the fix", () => {
    expect(() => toAllowlistArgs({ connection, sources: [], port: 80, portRange: "80-81" })).toThrow(
      'port and portRange are both set. Fix: give one of them: port for one port (8080), portRange for a range ("8000-8100").',
    );
  });
});

describe("toFleetArgs", () => {
  const fleet = (): AllowlistFleetArgs => ({
    connection: { user: "root", privateKey: "KEY" },
    policies: [
      { name: "web", port: 8080, sources: ["198.18.1.0/24"] },
      { name: "ftp", portRange: "20-21", protocols: [Protocol.Tcp], sources: [] },
    ],
    hosts: [{ name: "a", connection: { host: "198.18.0.10" }, extraSources: { web: ["198.18.9.9"] } }],
    rollout: { canaries: ["a"] },
  });

  it("keeps every field and moves portRange into port, policy by policy", () => {
    const args = toFleetArgs(fleet());
    expect(args.policies).toEqual([
      { name: "web", port: 8080, sources: ["198.18.1.0/24"] },
      { name: "ftp", port: "20-21", protocols: ["tcp"], sources: [] },
    ]);
    expect(args).toMatchObject({
      hosts: fleet().hosts,
      connection: fleet().connection,
      rollout: { canaries: ["a"] },
    });
  });

  it("names the policy whose port and portRange are both set", () => {
    const f = fleet();
    f.policies[1].port = 21;
    expect(() => toFleetArgs(f)).toThrow("policies[1].port and policies[1].portRange are both set.");
  });
});

describe("the components", () => {
  let registered: Registered[] = [];
  beforeAll(() => {
    registered = recordRegistrations();
  });

  it("Allowlist registers itself and one DockerPortAllowlist below it", async () => {
    registered.length = 0;
    const a = new Allowlist("web", { connection, portRange: "8000-8100", sources: ["198.18.1.0/24"] });
    // The outputs are the allowlist's: once they resolve, the mocks have seen both registrations.
    await new Promise((resolve) => a.chain.apply(resolve));
    expect(registered.map((r) => [r.type, r.name])).toEqual([
      ["docker-port-allowlist:index:Allowlist", "web"],
      [DOCKER_PORT_ALLOWLIST_TYPE, "web"],
    ]);
    expect(registered[1].inputs).toMatchObject({ port: "8000-8100", sources: ["198.18.1.0/24"] });
  });

  it("AllowlistFleet rolls a DockerPortAllowlistFleet out and reports its batches", async () => {
    registered.length = 0;
    const f = new AllowlistFleet("edge", {
      connection: { user: "root", privateKey: "KEY", hostKey: "SHA256:k" },
      policies: [{ name: "dns", port: 5353, protocols: [Protocol.Udp], sources: ["198.18.2.2"] }],
      hosts: [
        { name: "a", connection: { host: "198.18.0.10" } },
        { name: "b", connection: { host: "198.18.0.11" } },
      ],
      rollout: { canaries: ["b"] },
    });
    expect(await new Promise((resolve) => f.batches.apply(resolve))).toEqual([["b"], ["a"]]);
    await new Promise((resolve) => f.unpolicedPorts.apply(resolve));
    const allowlists = registered.filter((r) => r.type === DOCKER_PORT_ALLOWLIST_TYPE);
    expect(allowlists.map((r) => r.name)).toEqual(["edge-b-dns", "edge-a-dns"]);
    expect(allowlists[0].inputs).toMatchObject({ port: 5353, protocols: ["udp"], ruleName: "dns" });
  });

  it("AllowlistFleet reports a bad fleet with the field's path, as the TypeScript API does", () => {
    expect(
      () =>
        new AllowlistFleet("bad", {
          policies: [{ name: "web", port: 80, sources: [] }],
          hosts: [
            { name: "a", connection: { host: "198.18.0.10" } },
            { name: "a", connection: { host: "198.18.0.11" } },
          ],
        }),
    ).toThrow(
      new FleetError(
        'hosts[1].name "a" is already used by hosts[0]; every host needs a unique name. Rename one of them (names are used in resource names and in rollout.canaries).',
      ),
    );
  });
});
