/**
 * The fleet's per-host `firewallBackends` (and the YAML component's): each host's firewall as its
 * allowlists report it, the first that knows. The mocks play hosts whose allowlists came back with
 * `firewallBackend` set (host "n" runs Docker's nftables backend) or not yet known (host "u").
 */
import * as pulumi from "@pulumi/pulumi";
import { AllowlistFleet } from "../../provider/pulumi/component";
import { DockerPortAllowlistFleet } from "../../provider/pulumi/fleet";

beforeAll(() => {
  pulumi.runtime.setMocks(
    {
      newResource: (args) => {
        const host = /-(\w)-\w+$/.exec(args.name)?.[1];
        const firewallBackend = host === "n" ? "nftables" : host === "i" ? "iptables" : undefined;
        return { id: `${args.name}-id`, state: { ...args.inputs, firewallBackend } };
      },
      call: (args) => args.inputs,
    },
    "project",
    "stack",
    false,
  );
});

const value = <T>(o: pulumi.Output<T>) => new Promise<T>((resolve) => o.apply(resolve));

const args = {
  connection: { user: "root", privateKey: "KEY", hostKey: "SHA256:k" },
  policies: [
    { name: "web", port: 8080, sources: ["198.18.1.0/24"] },
    { name: "dns", port: 5353, protocols: ["udp" as const], sources: ["198.18.2.2"] },
  ],
  hosts: [
    { name: "i", connection: { host: "198.18.0.10" } },
    { name: "n", connection: { host: "198.18.0.11" } },
    { name: "u", connection: { host: "198.18.0.12" } },
    { name: "none", connection: { host: "198.18.0.13" }, policies: [] },
  ],
};

test("per host, the firewall its allowlists report; undefined where none knows or none applies", async () => {
  const fleet = new DockerPortAllowlistFleet("edge", args);
  expect(Object.keys(fleet.firewallBackends)).toEqual(["i", "n", "u", "none"]);
  expect(await value(fleet.firewallBackends.i)).toBe("iptables");
  expect(await value(fleet.firewallBackends.n)).toBe("nftables");
  expect(await value(fleet.firewallBackends.u)).toBeUndefined();
  expect(await value(fleet.firewallBackends.none)).toBeUndefined();
});

test("the YAML component's AllowlistFleet gives the known ones as one map", async () => {
  const fleet = new AllowlistFleet("yaml", args as never);
  expect(await value(fleet.firewallBackends)).toEqual({ i: "iptables", n: "nftables" });
});
