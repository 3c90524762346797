/**
 * Host keys, trust on first use, through the provider's own lifecycle functions over REAL SSH:
 * ssh2 servers on loopback (./../host/ssh2host.ts) whose execs run the real host scripts on a
 * stub host. Create records the key the host presented; a later read, update or delete refuses
 * a host presenting another key (both fingerprints and the fix), unless the user pinned the new
 * one; the jump host's key is treated the same. An unpinned connection says so on every
 * operation, on the provider's stderr (which the engine shows).
 */
import { readFileSync } from "fs";
import { join } from "path";
import { planAllowlist, validateAllowlist } from "../../provider/core";
import { HostError } from "../../provider/host";
import { check, create, read, remove, update, type Outputs } from "../../provider/pulumi/lifecycle";
import { applyPayload } from "../core/support/simulate";
import { StubHost } from "../host/stubhost";
import { captureStderr } from "../host/support";
import { ed25519, startSsh2Host, type Ssh2Host } from "../host/ssh2host";

jest.setTimeout(60_000);

const SAVE4 = readFileSync(
  join(__dirname, "..", "core", "fixtures", "docker29", "iptables-save.v4.txt"),
  "utf8",
);
const DECLARED = { resourceName: "web", port: 8080, sources: ["198.18.1.0/24"], persist: false, ipv6: "off" };
// Any key will do: the servers accept every credential.
const CLIENT_KEY = ed25519().private;

let stub: StubHost;
let target: Ssh2Host;
let stderr: string[];
const servers: Ssh2Host[] = [];

async function serve(port?: number): Promise<Ssh2Host> {
  const s = await startSsh2Host({ port, shell: stub.shell() });
  servers.push(s);
  return s;
}

/** The target host re-installed (or impersonated): same address and port, another key. */
async function rekey(s: Ssh2Host): Promise<Ssh2Host> {
  await s.close();
  return serve(s.port);
}

beforeEach(async () => {
  stub = new StubHost();
  // The host already holds exactly this allowlist, so every operation is read + "in sync".
  const spec = validateAllowlist({ ...DECLARED, ruleName: "web" }, "web");
  if (!spec.ok) throw new Error(JSON.stringify(spec.failures));
  const plan = planAllowlist({ ipv4: SAVE4, ipv6: null }, spec.spec, "web");
  stub.write("save4", applyPayload(SAVE4, plan.families.ipv4!.payload, "ipv4"));
  stub.write("save6.fail", "ip6tables-save: IPv6 is off on this host");
  target = await serve();
  stderr = captureStderr();
});

afterEach(async () => {
  jest.restoreAllMocks();
  await Promise.all(servers.splice(0).map((s) => s.close()));
  stub.remove();
});

function inputs(connection: Record<string, unknown>): Record<string, unknown> {
  const r = check({}, { ...DECLARED, connection: { privateKey: CLIENT_KEY, ...connection } });
  if (r.inputs === undefined) throw new Error(JSON.stringify(r.failures));
  return r.inputs;
}

async function refusal(p: Promise<unknown>): Promise<HostError> {
  try {
    await p;
  } catch (err) {
    if (HostError.isInstance(err)) return err;
    throw err;
  }
  throw new Error("expected the host to be refused");
}

const asProps = (o: Outputs) => o as unknown as Record<string, unknown>;

describe("trust on first use", () => {
  test("create records the key it saw; later operations accept that key and say the host is not pinned", async () => {
    const conn = { host: "127.0.0.1", port: target.port };
    const { outs } = await create(inputs(conn));
    expect(outs.hostKeyFingerprint).toBe(target.hostKeyFingerprint);
    expect(outs.proxyHostKeyFingerprint).toBeUndefined();
    expect(stderr.join("")).toContain(
      `warning: DockerPortAllowlist "web" (create): connection.hostKey is not pinned for root@127.0.0.1:${target.port}: ` +
        `whatever key it presents now is trusted on first use`,
    );

    stderr.length = 0;
    const refreshed = await read("id", asProps(outs));
    expect(refreshed.props.hostKeyFingerprint).toBe(target.hostKeyFingerprint);
    expect(stderr.join("")).toContain(
      `warning: DockerPortAllowlist "web" (read): connection.hostKey is not pinned for root@127.0.0.1:${target.port}: ` +
        `only the key recorded at first use, ${target.hostKeyFingerprint} (hostKeyFingerprint in the state), is accepted.`,
    );
    await update("id", asProps(outs), inputs(conn));
    stub.write("next4", SAVE4); // where the delete's payload leads (the stub restore's answer)
    await remove("id", asProps(outs));
    expect(stderr.join("")).toContain(`"web" (update): connection.hostKey is not pinned`);
    expect(stderr.join("")).toContain(`"web" (delete): connection.hostKey is not pinned`);
  });

  test("a host presenting another key is refused by read, update and delete, with both fingerprints and the fix", async () => {
    const conn = { host: "127.0.0.1", port: target.port };
    const { outs } = await create(inputs(conn));
    const first = target.hostKeyFingerprint;
    target = await rekey(target);
    const expected =
      `host key changed for root@127.0.0.1:${target.port}: it presented ${target.hostKeyFingerprint}, but the key ` +
      `recorded when this resource first connected is ${first} (hostKeyFingerprint in the state; ` +
      `connection.hostKey pins nothing). The connection was refused before any credential was sent. Fix: check ` +
      `the host's key out of band (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host). If ` +
      `${target.hostKeyFingerprint} is really its key (re-installed, key rotated), pin it: set connection.hostKey ` +
      `to "${target.hostKeyFingerprint}" and run \`pulumi up\`, which records it;`;
    for (const op of [
      () => read("id", asProps(outs)),
      () => update("id", asProps(outs), inputs(conn)),
      () => remove("id", asProps(outs)),
    ]) {
      const err = await refusal(op());
      expect(err.kind).toBe("host-key");
      expect(err.message).toContain(expected);
      expect(err.message).toContain("`pulumi stack export`");
    }
  });

  test("a new pin wins over the recorded key, and is what the state records from then on", async () => {
    const { outs } = await create(inputs({ host: "127.0.0.1", port: target.port }));
    target = await rekey(target);
    const pinned = inputs({ host: "127.0.0.1", port: target.port, hostKey: target.hostKeyFingerprint });
    const updated = await update("id", asProps(outs), pinned);
    expect(updated.outs.hostKeyFingerprint).toBe(target.hostKeyFingerprint);
    // Pinned: nothing to warn about.
    expect(stderr.join("")).not.toContain('"web" (update)');
    // The pin removed again: the key recorded by that update is the trusted one.
    const unpinned = {
      ...asProps(updated.outs),
      connection: { host: "127.0.0.1", port: target.port, privateKey: CLIENT_KEY },
    };
    const again = await read("id", unpinned);
    expect(again.props.hostKeyFingerprint).toBe(target.hostKeyFingerprint);
  });

  test("another endpoint (a replacement) starts with nothing recorded", async () => {
    const { outs } = await create(inputs({ host: "127.0.0.1", port: target.port }));
    const other = await serve();
    const moved = await update("id", asProps(outs), inputs({ host: "127.0.0.1", port: other.port }));
    expect(moved.outs.hostKeyFingerprint).toBe(other.hostKeyFingerprint);
  });
});

describe("the jump host", () => {
  test("its key is recorded at create, checked later, and an unpinned jump host is warned about", async () => {
    let jump = await startSsh2Host();
    servers.push(jump);
    const conn = {
      host: "127.0.0.1",
      port: target.port,
      hostKey: target.hostKey,
      proxy: { host: "127.0.0.1", port: jump.port, privateKey: CLIENT_KEY },
    };
    const { outs } = await create(inputs(conn));
    expect(outs).toMatchObject({
      hostKeyFingerprint: target.hostKeyFingerprint,
      proxyHostKeyFingerprint: jump.hostKeyFingerprint,
    });
    expect(stderr.join("")).toContain(
      `"web" (create): connection.proxy.hostKey is not pinned for root@127.0.0.1:${jump.port}: `,
    );
    expect(stderr.join("")).not.toContain("connection.hostKey is not pinned");

    const first = jump.hostKeyFingerprint;
    await jump.close();
    jump = await startSsh2Host({ port: jump.port });
    servers.push(jump);
    const err = await refusal(read("id", asProps(outs)));
    expect(err.kind).toBe("host-key");
    expect(err.message).toContain(
      `host key changed for jump host root@127.0.0.1:${jump.port}: it presented ${jump.hostKeyFingerprint}, ` +
        `but the key recorded when this resource first connected is ${first} (proxyHostKeyFingerprint in the ` +
        `state; connection.proxy.hostKey pins nothing).`,
    );
  });
});
