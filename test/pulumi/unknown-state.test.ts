/**
 * A host whose state is unknown (a rollback failed for good, issue 9) through the provider's
 * lifecycle, over REAL SSH (an ssh2 server on loopback whose execs run the real host scripts on
 * a stub host): refresh reports it as an error finding with the command to inspect the host and
 * as drift, so the next `up` writes even though the rules are in sync; that write clears the
 * host's marker, and the refresh after it is quiet.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "fs";
import { join } from "path";
import { planAllowlist, validateAllowlist } from "../../provider/core";
import { check, create, diff, read, update } from "../../provider/pulumi/lifecycle";
import { applyPayload } from "../core/support/simulate";
import { CLIENT_KEY, stubHostOverSsh } from "./support/ssh2-stub";

jest.setTimeout(60_000);

const SAVE4 = readFileSync(
  join(__dirname, "..", "core", "fixtures", "docker28", "iptables-save.v4.txt"),
  "utf8",
);

const env = stubHostOverSsh();

function checked(olds: Record<string, unknown>): Record<string, unknown> {
  const r = check(olds, {
    resourceName: "web",
    port: 8080,
    sources: ["198.18.1.0/24"],
    persist: false,
    connection: { host: "127.0.0.1", port: env.server.port, privateKey: CLIENT_KEY },
  });
  if (r.inputs === undefined) throw new Error(JSON.stringify(r.failures));
  return r.inputs;
}

test("refresh reports the unknown state as an error and as drift; the next up writes, clears it, and the refresh after it is quiet", async () => {
  const v = validateAllowlist({ ...checked({}), ruleName: "web" }, "web");
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  env.stub.write("save4", SAVE4);
  env.stub.write(
    "next4",
    applyPayload(
      SAVE4,
      planAllowlist({ ipv4: SAVE4, ipv6: null }, v.spec, "web").families.ipv4!.payload,
      "ipv4",
    ),
  );
  const created = await create(checked({}));

  // What the sync script's rollback leaves when every try failed.
  mkdirSync(env.stub.runDir, { recursive: true });
  writeFileSync(
    join(env.stub.runDir, "unknown.web"),
    "rollback of families 4 failed 3 times at 2026-12-07T12:00:00Z:\nAnother app is currently holding the xtables lock.\n",
  );
  const refreshed = await read(created.id, created.outs as unknown as Record<string, unknown>);
  expect(refreshed.props.hostFindings[0]).toBe(
    "[ipv4] error: The host's iptables state for DPA-web is UNKNOWN: a rollback failed after every retry, so " +
      "FORWARD / DOCKER-USER / INPUT / DPA-web may be half-changed (the host says: rollback of families 4 failed " +
      "3 times at 2026-12-07T12:00:00Z: | Another app is currently holding the xtables lock.). Inspect: " +
      "`iptables-save -t filter | grep -n -- 'DPA-web'; ip6tables-save -t filter | grep -n -- 'DPA-web'; " +
      "cat /run/docker-port-allowlist/unknown.web`. Fix: once whatever held the xtables lock (or made the restore " +
      "fail) is gone, run `pulumi up`: it re-reads the host, converges it and clears this.",
  );
  expect(refreshed.props.inSync).toBe(false);
  const next = checked(refreshed.inputs);
  expect(diff(refreshed.props as unknown as Record<string, unknown>, next).changes).toBe(true);

  // The rules are in sync: nothing is applied, but the write is made and clears the marker.
  const updated = await update(created.id, refreshed.props as unknown as Record<string, unknown>, next);
  expect(updated.outs.lastOperation.applied).toBe(false);
  expect(existsSync(join(env.stub.runDir, "unknown.web"))).toBe(false);
  const again = await read(created.id, updated.outs as unknown as Record<string, unknown>);
  expect(again.props.inSync).toBe(true);
  expect(again.props.hostFindings.join("\n")).not.toContain("UNKNOWN");
});
