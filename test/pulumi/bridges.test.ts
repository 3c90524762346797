/**
 * Docker's bridges through the provider's lifecycle, over REAL SSH (an ssh2 server on loopback
 * whose execs run the real host scripts on a stub host): create records the bridges it found,
 * a Docker network made later is drift on refresh (and the refresh records the new bridges, so
 * the next preview shows their exemptions), the next `up` follows it, and a refresh after that
 * leaves nothing for the preview to show; where the first preview guessed fewer bridges than
 * the host has, the refresh changes nothing but records them, and the next preview is empty.
 */
import { readFileSync } from "fs";
import { join } from "path";
import { planAllowlist, validateAllowlist } from "../../provider/core";
import { check, create, diff, read, update } from "../../provider/pulumi/lifecycle";
import { applyPayload } from "../core/support/simulate";
import { CLIENT_KEY, stubHostOverSsh } from "./support/ssh2-stub";

jest.setTimeout(60_000);

const fixture = (name: string) =>
  readFileSync(join(__dirname, "..", "core", "fixtures", name, "iptables-save.v4.txt"), "utf8");
/** Docker 28 with docker0 only. */
const PLAIN = fixture("docker28");

const env = stubHostOverSsh();

function declared(): Record<string, unknown> {
  return {
    resourceName: "web",
    port: 8080,
    sources: ["198.18.1.0/24"],
    persist: false,
    connection: { host: "127.0.0.1", port: env.server.port, privateKey: CLIENT_KEY },
  };
}

function checked(olds: Record<string, unknown>): Record<string, unknown> {
  const r = check(olds, declared());
  if (r.inputs === undefined) throw new Error(JSON.stringify(r.failures));
  return r.inputs;
}

/** `live` with the allowlist converged (what the stub host holds after the restore). */
function converged(live: string): string {
  const v = validateAllowlist({ ...declared(), ruleName: "web" }, "web");
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  const plan = planAllowlist({ ipv4: live, ipv6: null }, v.spec, "web");
  return plan.families.ipv4 === undefined ? live : applyPayload(live, plan.families.ipv4.payload, "ipv4");
}

const exemptions = (rules: unknown) =>
  (rules as { ipv4: string[] }).ipv4.filter((l) => / -i \S+ -m comment .* -j RETURN$/.test(l));
const exemption = (bridge: string) => `-A DPA-web -i ${bridge} -m comment --comment "dpa:web" -j RETURN`;

test("create records the bridges; a new Docker network is drift on refresh, shown by the next preview and followed by the next up", async () => {
  // Create: the preview knows no host yet (docker0 stands in); the host has docker0 only.
  const first = checked({});
  expect(exemptions(first.rules)).toEqual([exemption("docker0")]);
  env.stub.write("save4", PLAIN);
  env.stub.write("next4", converged(PLAIN));
  const created = await create(first);
  expect(created.outs.dockerBridges).toEqual({ ipv4: ["docker0"], ipv6: [] });

  // Someone runs `docker network create` twice: Docker's own chains name two more bridges.
  const live = applyPayload(
    converged(PLAIN),
    [
      "*filter",
      "-A DOCKER-BRIDGE -o br-1a2b3c4d5e6f -j DOCKER",
      "-A DOCKER-FORWARD -i br-1a2b3c4d5e6f -j ACCEPT",
      "-A DOCKER-BRIDGE -o bridge1 -j DOCKER",
      "-A DOCKER-FORWARD -i bridge1 -j ACCEPT",
      // The host's own uplink bridge, in a chain anyone writes to: never exempted.
      "-A FORWARD -i br-lan -o br-lan -j ACCEPT",
      "COMMIT",
      "",
    ].join("\n"),
    "ipv4",
  );
  env.stub.write("save4", live);
  const refreshed = await read(created.id, created.outs as unknown as Record<string, unknown>);
  expect(refreshed.props.inSync).toBe(false);
  expect(refreshed.inputs.dockerBridges).toEqual({
    ipv4: ["br-1a2b3c4d5e6f", "bridge1", "docker0"],
    ipv6: [],
  });

  // The next preview renders the new bridges, and diff says the resource changes.
  const next = checked(refreshed.inputs);
  expect(exemptions(next.rules)).toEqual([
    exemption("br-1a2b3c4d5e6f"),
    exemption("bridge1"),
    exemption("docker0"),
  ]);
  expect(diff(refreshed.props as unknown as Record<string, unknown>, next).changes).toBe(true);

  // The up applies the new exemptions; a refresh then finds the host in sync, and the preview
  // after it shows nothing to do.
  env.stub.write("next4", converged(live));
  const updated = await update(created.id, refreshed.props as unknown as Record<string, unknown>, next);
  expect(updated.outs.lastOperation.applied).toBe(true);
  expect(env.stub.read("save4")).toContain(exemption("bridge1"));
  expect(env.stub.read("save4")).not.toContain("-i br-lan -m comment");
  const again = await read(created.id, updated.outs as unknown as Record<string, unknown>);
  expect(again.props.inSync).toBe(true);
  const quiet = checked(again.inputs);
  expect(diff(again.props as unknown as Record<string, unknown>, quiet).changes).toBe(false);
});

test("a host with more bridges than the first preview guessed: refresh changes nothing, records them, and the next preview is empty", async () => {
  const withNetworks = fixture("docker28-usernets");
  env.stub.write("save4", withNetworks);
  env.stub.write("next4", converged(withNetworks));
  const created = await create(checked({}));
  expect(created.outs.dockerBridges.ipv4).toEqual(["br-1a2b3c4d5e6f", "bridge1", "docker0"]);
  // In sync: the refresh leaves the outputs' rules as they were (nothing to report), and records
  // the bridges in the inputs, from which the next preview renders what the host holds.
  const refreshed = await read(created.id, created.outs as unknown as Record<string, unknown>);
  expect(refreshed.props.inSync).toBe(true);
  expect(refreshed.props.rules).toEqual(created.outs.rules);
  const next = checked(refreshed.inputs);
  expect(exemptions(next.rules)).toEqual([
    exemption("br-1a2b3c4d5e6f"),
    exemption("bridge1"),
    exemption("docker0"),
  ]);
  // Exemptions are the host's fact (drift is inSync: false), never a change by themselves.
  expect(diff(refreshed.props as unknown as Record<string, unknown>, next).changes).toBe(false);
});
