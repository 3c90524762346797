/**
 * Revocation you can trust, as the provider reports it: on a host without conntrack, a create
 * (which takes access away from everyone not listed) succeeds, and the flows it could not cut
 * are a warning in `lastOperation.findings` and `hostFindings`, which a refresh keeps until the
 * next change. Real SSH (an ssh2 server on loopback) and the real scripts on a stub host.
 */
import { readFileSync } from "fs";
import { join } from "path";
import { planAllowlist, validateAllowlist } from "../../provider/core";
import { check, create, read } from "../../provider/pulumi/lifecycle";
import { applyPayload } from "../core/support/simulate";
import { ed25519, startSsh2Host, type Ssh2Host } from "../host/ssh2host";
import { StubHost } from "../host/stubhost";

jest.setTimeout(60_000);

const SAVE4 = readFileSync(
  join(__dirname, "..", "core", "fixtures", "docker29", "iptables-save.v4.txt"),
  "utf8",
);
const DECLARED = { resourceName: "web", port: 8080, sources: ["198.18.1.0/24"], persist: false, ipv6: "off" };

let stub: StubHost;
let server: Ssh2Host;

beforeEach(async () => {
  stub = new StubHost({ without: ["conntrack"] });
  stub.write("save4", SAVE4);
  stub.write("save6.fail", "ip6tables-save: IPv6 is off on this host");
  server = await startSsh2Host({ shell: stub.shell() });
  jest.spyOn(process.stderr, "write").mockImplementation(() => true);
});

afterEach(async () => {
  jest.restoreAllMocks();
  await server.close();
  stub.remove();
});

test("a create on a host without conntrack warns that live flows were not cut, and refresh keeps the warning", async () => {
  const spec = validateAllowlist({ ...DECLARED, ruleName: "web" }, "web");
  if (!spec.ok) throw new Error(JSON.stringify(spec.failures));
  // Where the create's payload leads (the stub restore's answer).
  const plan = planAllowlist({ ipv4: SAVE4, ipv6: null }, spec.spec, "web");
  stub.write("next4", applyPayload(SAVE4, plan.families.ipv4!.payload, "ipv4"));
  const checked = check(
    {},
    { ...DECLARED, connection: { host: "127.0.0.1", port: server.port, privateKey: ed25519().private } },
  );
  if (checked.inputs === undefined) throw new Error(JSON.stringify(checked.failures));

  const { outs } = await create(checked.inputs);
  const warning =
    "[ipv4] warning: conntrack is not installed on the host, so live flows of sources that DPA-web no longer " +
    "lets in were not cut: they go on until they end (new connections are refused). Fix: install conntrack " +
    "(Debian/Ubuntu package `conntrack`, RHEL `conntrack-tools`); the next change applied then cuts them.";
  expect(outs.lastOperation).toMatchObject({ applied: true, conntrackDeleted: 0, findings: [warning] });
  expect(outs.hostFindings).toContain(warning);

  const refreshed = await read("id", outs as unknown as Record<string, unknown>);
  expect(refreshed.props.inSync).toBe(true);
  expect(refreshed.props.hostFindings).toEqual(outs.hostFindings);
});
