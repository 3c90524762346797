/**
 * `unpolicedPorts` and its warning as the provider reports them: the real scripts read the nat
 * table on a stub host (real SSH: an ssh2 server on loopback), a create and a refresh name the
 * published port no allowlist polices, and a refresh after another allowlist covers it names none.
 * The warning goes to the engine's output of each operation (the provider's stderr), never into
 * `hostFindings`: it is a fact about other allowlists too, which the state would repeat stale.
 */
import { readFileSync } from "fs";
import { join } from "path";
import { planAllowlist, validateAllowlist } from "../../provider/core";
import { check, create, read } from "../../provider/pulumi/lifecycle";
import { applyPayload } from "../core/support/simulate";
import { CLIENT_KEY, stubHostOverSsh } from "./support/ssh2-stub";

jest.setTimeout(60_000);

// Docker 29's real rules (lab/layouts/docker29.v4.rules): 8080/tcp and 5353/udp published.
const LAYOUT = readFileSync(join(__dirname, "..", "..", "lab", "layouts", "docker29.v4.rules"), "utf8");
const FILTER = LAYOUT.slice(LAYOUT.indexOf("*filter"), LAYOUT.indexOf("*nat"));
const NAT = LAYOUT.slice(LAYOUT.indexOf("*nat"));
const DECLARED = { persist: false, ipv6: "off" };

const env = stubHostOverSsh({}, (stub) => {
  stub.write("save4", FILTER);
  stub.write("nat4", NAT);
});

/** `filter` once the allowlist `args` is applied (what the stub's restore leads to). */
function applied(filter: string, name: string, args: Record<string, unknown>): string {
  const v = validateAllowlist({ ...args, ruleName: name }, name);
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return applyPayload(
    filter,
    planAllowlist({ ipv4: filter, ipv6: null }, v.spec, name).families.ipv4!.payload,
    "ipv4",
  );
}

test("create and refresh name the published port no allowlist polices; none once another allowlist covers it", async () => {
  const web = { ...DECLARED, resourceName: "web", port: 8080, sources: ["198.18.1.0/24"] };
  const withWeb = applied(FILTER, "web", web);
  env.stub.write("next4", withWeb);
  const checked = check(
    {},
    { ...web, connection: { host: "127.0.0.1", port: env.server.port, privateKey: CLIENT_KEY } },
  );
  if (checked.inputs === undefined) throw new Error(JSON.stringify(checked.failures));

  const { outs } = await create(checked.inputs);
  expect(outs.unpolicedPorts).toEqual(["5353/udp ipv4 -> 172.17.0.3:53"]);
  const warning = (operation: string) =>
    `warning: DockerPortAllowlist "web" (${operation}): [ipv4] warning: Docker publishes a port on this host that ` +
    "no allowlist polices in ipv4, so everyone who reaches the host reaches it: 5353/udp ipv4 -> 172.17.0.3:53. " +
    "Fix: add an allowlist for it (port and protocol as shown), or unpublish it (or publish on 127.0.0.1 only).\n";
  expect(env.stderr).toContain(warning("create"));
  expect(outs.hostFindings.join("\n")).not.toContain("no allowlist polices");
  const refreshed = await read("id", outs as unknown as Record<string, unknown>);
  expect(refreshed.props.unpolicedPorts).toEqual(outs.unpolicedPorts);
  expect(refreshed.props.hostFindings).toEqual(outs.hostFindings);
  expect(env.stderr).toContain(warning("read"));

  // Another allowlist (another resource, stack or program) polices 5353/udp meanwhile.
  env.stub.write("save4", applied(withWeb, "dns", { port: 5353, protocols: ["udp"], sources: [] }));
  env.stderr.length = 0;
  const later = await read("id", refreshed.props as unknown as Record<string, unknown>);
  expect(later.props.unpolicedPorts).toEqual([]);
  expect(env.stderr.join("")).not.toContain("no allowlist polices");
});

test("a refresh on a host running Docker's nftables backend names the ports of its nat chain", async () => {
  // No Docker chains in iptables; `nft list ...` prints the real Docker 29 nftables capture.
  env.stub.write(
    "save4",
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
  );
  env.stub.write("nat4", "*nat\nCOMMIT\n");
  env.stub.write(
    "nft-tables",
    readFileSync(join(__dirname, "..", "core", "fixtures", "docker29-nftables", "nft-nat.v4.txt"), "utf8"),
  );
  const web = { ...DECLARED, resourceName: "web", port: 8080, sources: ["198.18.1.0/24"] };
  const props = check(
    {},
    { ...web, connection: { host: "127.0.0.1", port: env.server.port, privateKey: CLIENT_KEY } },
  );
  const refreshed = await read("id", props.inputs!);
  expect(refreshed.props.unpolicedPorts).toEqual([
    "8080/tcp ipv4 -> 172.17.0.2:80",
    "5353/udp ipv4 -> 172.17.0.3:53",
    "9443/tcp ipv4 on 198.18.0.10 -> 172.17.0.4:80",
  ]);
});
